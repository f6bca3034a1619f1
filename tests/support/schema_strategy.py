"""Hypothesis strategies from a JSON Schema (the subset pydantic writes into the app's OpenAPI document).

`from_schema(schema, components)` draws instances that conform to the schema (so a fuzzer reaches the
code behind validation); `mutated(...)` draws conforming instances with one defect (a value of another
type, a missing required field, an unknown field, an out-of-range number) so it exercises the errors.
Small bounds on sizes keep thousands of cases fast. Not a general JSON Schema implementation: what it
does not know (e.g. `patternProperties`) raises, so the schema cannot silently stop being exercised.
"""

from __future__ import annotations

import copy
import math
from typing import Any

from hypothesis import strategies as st

JSON_SCALAR = (st.none() | st.booleans() | st.integers(min_value=-(2**66), max_value=2**66)
               | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8))
ANY_JSON = st.recursive(JSON_SCALAR, lambda c: st.lists(c, max_size=3) | st.dictionaries(
    st.text(max_size=5), c, max_size=3), max_leaves=5)
_KNOWN = {"type", "properties", "required", "additionalProperties", "items", "minItems", "maxItems",
          "minLength", "maxLength", "pattern", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
          "enum", "const", "anyOf", "oneOf", "allOf", "$ref", "title", "description", "default", "examples",
          "discriminator"}


class SchemaStrategies:
    def __init__(self, components: dict[str, Any], overrides: dict[str, st.SearchStrategy[Any]] | None = None,
                 max_items: int = 3, max_text: int = 24) -> None:
        self.components = components
        self.overrides = overrides or {}  # top-level property name -> strategy mixed into the schema's own
        self.max_items, self.max_text = max_items, max_text
        self._cache: dict[str, st.SearchStrategy[Any]] = {}

    def resolve(self, s: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in s:
            s = self.components[s["$ref"].rsplit("/", 1)[-1]]
        return s

    def of(self, s: dict[str, Any], top: bool = False) -> st.SearchStrategy[Any]:
        if "$ref" in s:
            name = s["$ref"].rsplit("/", 1)[-1]
            if name not in self._cache:
                self._cache[name] = st.deferred(lambda: self.of(self.components[name], top))
            return self._cache[name]
        unknown = set(s) - _KNOWN
        if unknown:
            raise ValueError(f"schema keywords this generator does not know: {sorted(unknown)}")
        if "const" in s:
            return st.just(s["const"])
        if "enum" in s:
            return st.sampled_from(s["enum"])
        for key in ("anyOf", "oneOf"):
            if key in s:
                return st.one_of([self.of(sub) for sub in s[key]])
        if "allOf" in s:
            merged: dict[str, Any] = {}
            for sub in s["allOf"]:
                merged.update(self.resolve(sub))
            return self.of(merged)
        t = s.get("type")
        if isinstance(t, list):
            return st.one_of([self.of({**s, "type": x}) for x in t])
        if t == "null":
            return st.none()
        if t == "boolean":
            return st.booleans()
        if t == "integer":
            lo, hi = s.get("minimum"), s.get("maximum")
            lo = lo if lo is not None else -(2**63)
            hi = hi if hi is not None else 2**63 - 1
            if "exclusiveMinimum" in s:
                lo = math.floor(s["exclusiveMinimum"]) + 1
            if "exclusiveMaximum" in s:
                hi = math.ceil(s["exclusiveMaximum"]) - 1
            return st.integers(min_value=lo, max_value=hi) | st.integers(min_value=lo, max_value=min(hi, lo + 64))
        if t == "number":
            return st.floats(min_value=s.get("minimum", s.get("exclusiveMinimum")),
                             max_value=s.get("maximum", s.get("exclusiveMaximum")),
                             exclude_min="exclusiveMinimum" in s, exclude_max="exclusiveMaximum" in s,
                             allow_nan=False, allow_infinity=False)
        if t == "string":
            if "pattern" in s:
                return st.from_regex(s["pattern"], fullmatch=True)
            lo = s.get("minLength", 0)
            return st.text(min_size=lo, max_size=max(lo, min(s.get("maxLength", self.max_text), self.max_text)))
        if t == "array":
            lo = s.get("minItems", 0)
            hi = max(lo, min(s.get("maxItems", self.max_items), self.max_items))
            return st.lists(self.of(s.get("items", {})) if s.get("items") else ANY_JSON, min_size=lo, max_size=hi)
        if t == "object" or "properties" in s:
            return self._object(s, top)
        if not s or set(s) <= {"title", "description", "default", "examples"}:
            return ANY_JSON  # `Any`
        raise ValueError(f"cannot generate from schema {s}")

    def _object(self, s: dict[str, Any], top: bool) -> st.SearchStrategy[Any]:
        props = s.get("properties", {})
        required = set(s.get("required", ()))

        def prop(name: str, sub: dict[str, Any]) -> st.SearchStrategy[Any]:
            base = self.of(sub)
            return (self.overrides[name] | base) if top and name in self.overrides else base

        fixed = st.fixed_dictionaries(
            {k: prop(k, v) for k, v in props.items() if k in required},
            optional={k: prop(k, v) for k, v in props.items() if k not in required},
        )
        extra = s.get("additionalProperties", True)
        if extra is False or not top:
            return fixed
        # open objects (the top-level bodies): sometimes an unknown field passes through to the target
        return st.tuples(fixed, st.dictionaries(st.sampled_from(["top_k", "min_p", "x_extra"]), JSON_SCALAR,
                                                max_size=1)).map(lambda p: {**p[1], **p[0]})

    def valid(self, name: str) -> st.SearchStrategy[Any]:
        return self.of(self.components[name], top=True)

    def mutated(self, name: str) -> st.SearchStrategy[Any]:
        """A conforming body with one defect somewhere in it."""
        return st.tuples(self.valid(name), st.randoms(use_true_random=False), ANY_JSON).map(
            lambda t: _mutate(*t))


def _mutate(value: Any, rnd: Any, junk: Any) -> Any:
    value = copy.deepcopy(value)
    containers: list[Any] = []
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, dict | list):
            containers.append(v)
            stack.extend(v.values() if isinstance(v, dict) else v)
    target = rnd.choice(containers) if containers else value
    if isinstance(target, dict):
        action = rnd.choice(["replace", "drop", "add"]) if target else "add"
        if action == "add":
            target["unknown_" + str(rnd.randint(0, 9))] = junk
        elif action == "drop":
            del target[rnd.choice(list(target))]
        else:
            target[rnd.choice(list(target))] = junk
    elif isinstance(target, list) and target:
        target[rnd.randrange(len(target))] = junk
    return value
