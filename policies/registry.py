"""Name -> (config model, policy class). Policies register themselves with `@register(ConfigModel)`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from pydantic import BaseModel

# Sweep metadata. Every policy config class carries two ClassVars the tuning lab (`tune eval`) reads to
# trace a router's cost-quality curve: `sweep_knob`, the name of the config field to vary (None = the
# policy has no knob: one operating point), and `sweep_grid`, the values to try, in order.
NO_KNOB: tuple[float, ...] = ()
UNIT_GRID: tuple[float, ...] = tuple(round(i / 50, 2) for i in range(51))  # 0.00, 0.02, ..., 1.00
# Cost weights span decades (USD prices differ by 100x between sets): 0, then 1e-4 .. 1e3 at 16 a
# decade (steps of 15%). The useful range on one set is about two decades, so this gives a curve about
# as fine as min_quality's 0.02 steps; at 8 a decade the cost to match a target moved by 0.2 on a
# 381-prompt test set just by where the coarse steps fell.
LOG_GRID: tuple[float, ...] = (0.0, *(float(f"{10 ** (e / 16):.4g}") for e in range(-64, 49)))

_REGISTRY: dict[str, tuple[type[BaseModel], type[Any]]] = {}

C = TypeVar("C", bound=type)


def register(config: type[BaseModel]) -> Callable[[C], C]:
    """Register a policy class under its config's `name` literal (one name, one class)."""
    name = config.model_fields["name"].default
    if not isinstance(name, str):
        raise TypeError(f"{config.__name__}.name needs a string default")

    def deco(cls: C) -> C:
        if name in _REGISTRY and _REGISTRY[name][1] is not cls:
            raise ValueError(f"policy name {name!r} registered twice")
        _REGISTRY[name] = (config, cls)
        cls.name = name  # type: ignore[attr-defined]
        return cls

    return deco


def sweep_of(config: type[BaseModel] | BaseModel) -> tuple[str | None, tuple[float, ...]]:
    """(knob field name or None, grid) of a policy config class or instance."""
    return getattr(config, "sweep_knob", None), tuple(getattr(config, "sweep_grid", NO_KNOB))


def registered() -> dict[str, tuple[type[BaseModel], type[Any]]]:
    """All registered policies by name (import `policies.config` first to load the built-ins)."""
    return dict(_REGISTRY)


def policy_class(name: str) -> type[Any]:
    try:
        return _REGISTRY[name][1]
    except KeyError:
        raise ValueError(f"unknown policy {name!r}; known: {sorted(_REGISTRY)}") from None
