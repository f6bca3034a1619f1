"""Name -> (config model, policy class). Policies register themselves with `@register(ConfigModel)`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from pydantic import BaseModel

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


def registered() -> dict[str, tuple[type[BaseModel], type[Any]]]:
    """All registered policies by name (import `policies.config` first to load the built-ins)."""
    return dict(_REGISTRY)


def policy_class(name: str) -> type[Any]:
    try:
        return _REGISTRY[name][1]
    except KeyError:
        raise ValueError(f"unknown policy {name!r}; known: {sorted(_REGISTRY)}") from None
