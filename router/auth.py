"""Optional bearer API keys: per-key defaults, allowed targets and a spend budget.

Spend is not kept here: router/budget.py reserves and settles it against the shared ledger
(router/ledger.py), configured by `AuthConfig.ledger`.

Keys are read once at start-up (`KeyStore.from_config`), kept only as sha256 digests, and compared with
`hmac.compare_digest` against every stored digest (no early exit), so neither the key nor its position
leaks through timing. No key configured = open access (the ingress says so at start-up).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

from policies.types import Constraints
from router.errors import BudgetExhausted, Forbidden, Unauthorized
from router.ledger import LedgerConfig

_FROZEN = ConfigDict(frozen=True, extra="forbid")


class KeyEntry(BaseModel):
    """One API key and what it may do. Give the key itself or its sha256 hex digest."""

    model_config = _FROZEN

    name: str = Field(..., min_length=1, description="Label for logs and metrics (never the key).")
    key: SecretStr | None = Field(default=None, description="The bearer key in clear (hashed on load).")
    key_sha256: str | None = Field(
        default=None, pattern=r"^[0-9a-fA-F]{64}$", description="sha256 hex digest of the bearer key."
    )
    allowed_targets: tuple[str, ...] | None = Field(
        default=None, description="Target ids this key may use (None = the config default)."
    )
    constraints: Constraints | None = Field(
        default=None,
        description="Constraints applied when the request sets none (None = the config default).",
    )
    budget_usd: float | None = Field(
        default=None, ge=0, description="Spend limit in USD for this key (None = the config default)."
    )

    @model_validator(mode="after")
    def _one_key(self) -> KeyEntry:
        if (self.key is None) == (self.key_sha256 is None):
            raise ValueError("give exactly one of key, key_sha256")
        if self.key is not None:
            # Keep only the digest: the config reaches the ingress replicas as a JSON dump, where a
            # SecretStr would arrive as "**********" (and a clear key would sit in Serve's config).
            digest = hashlib.sha256(self.key.get_secret_value().encode()).hexdigest()
            object.__setattr__(self, "key_sha256", digest)
            object.__setattr__(self, "key", None)
        return self


class AuthConfig(BaseModel):
    """Where the API keys come from and the defaults every key gets."""

    model_config = _FROZEN

    keys_env: str | None = Field(
        default=None,
        description="Name of an environment variable holding the keys: a JSON list of key entries "
        "(or of strings), or comma-separated keys.",
    )
    keys_file: str | None = Field(
        default=None, description="Path of a JSON file with a list of key entries (or of strings)."
    )
    keys: tuple[KeyEntry, ...] = Field(
        default=(), description="Key entries given inline (use key_sha256 here: config files get shared)."
    )
    default_allowed_targets: tuple[str, ...] | None = Field(
        default=None, description="Target ids a key may use when its entry says nothing (None = all)."
    )
    default_constraints: Constraints = Field(
        default_factory=lambda: Constraints.model_validate({}),
        description="Constraints for requests that set none.",
    )
    default_budget_usd: float | None = Field(
        default=None,
        ge=0,
        description="Spend limit in USD per key when its entry says nothing (None = none).",
    )
    ledger: LedgerConfig = Field(
        default_factory=LedgerConfig,
        description="Where spend is recorded: shared by all ingress replicas and kept across restarts.",
    )


@dataclass(frozen=True)
class Principal:
    """Who is calling, after authentication. `name` is a label, never the key."""

    name: str
    allowed_targets: tuple[str, ...] | None
    constraints: Constraints
    budget_usd: float | None

    def check_target(self, target_id: str) -> None:
        if self.allowed_targets is not None and target_id not in self.allowed_targets:
            raise Forbidden(f"this API key may not use target '{target_id}'")


def _sha256(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def _parse_entries(text: str, source: str) -> list[KeyEntry]:
    text = text.strip()
    if not text:
        return []
    if text.startswith("["):
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"{source}: not valid JSON (line {e.lineno})") from None
    else:
        raw = [k.strip() for k in text.split(",") if k.strip()]
    if not isinstance(raw, list):
        raise ValueError(f"{source}: expected a list of keys")
    out = []
    for i, item in enumerate(raw):
        if isinstance(item, str):
            out.append(KeyEntry(name=f"key-{i}", key=SecretStr(item)))
            continue
        try:
            out.append(KeyEntry.model_validate(item))
        except ValidationError as e:
            # pydantic's own message quotes the input, which holds the key: name fields only.
            fields = "; ".join(
                f"{'.'.join(map(str, err['loc'])) or 'entry'}: {err['msg']}"
                for err in e.errors(include_input=False, include_url=False)
            )
            raise ValueError(f"{source}: key entry {i}: {fields}") from None
    return out


class KeyStore:
    """Authenticates bearer keys into principals (spend lives in router.budget)."""

    def __init__(
        self,
        config: AuthConfig,
        entries: list[KeyEntry] | tuple[KeyEntry, ...] = (),
        compare: Callable[[bytes, bytes], bool] = hmac.compare_digest,
    ) -> None:
        self._config = config
        self._compare = compare
        self._digests: list[tuple[bytes, Principal]] = []
        for e in (*config.keys, *entries):
            digest = (
                _sha256(e.key.get_secret_value()) if e.key is not None else bytes.fromhex(e.key_sha256 or "")
            )
            self._digests.append((digest, self._principal(e)))
        self._anonymous = Principal(
            "anonymous", config.default_allowed_targets, config.default_constraints,
            config.default_budget_usd,
        )

    @classmethod
    def from_config(cls, config: AuthConfig, environ: Mapping[str, str] | None = None) -> KeyStore:
        """Read keys from the env var / file the config names (start-up I/O, never per request)."""
        env = os.environ if environ is None else environ
        entries: list[KeyEntry] = []
        if config.keys_env:
            entries += _parse_entries(env.get(config.keys_env, ""), f"${config.keys_env}")
        if config.keys_file:
            entries += _parse_entries(Path(config.keys_file).read_text(), config.keys_file)
        return cls(config, entries)

    def _principal(self, e: KeyEntry) -> Principal:
        c = self._config
        return Principal(
            e.name,
            e.allowed_targets if e.allowed_targets is not None else c.default_allowed_targets,
            e.constraints if e.constraints is not None else c.default_constraints,
            e.budget_usd if e.budget_usd is not None else c.default_budget_usd,
        )

    @property
    def open(self) -> bool:
        """True when no key is configured: every request is accepted as 'anonymous'."""
        return not self._digests

    @property
    def key_count(self) -> int:
        return len(self._digests)

    def authenticate(self, authorization: str | None) -> Principal:
        """Principal for an `Authorization: Bearer <key>` header value; Unauthorized otherwise."""
        if self.open:
            return self._anonymous
        if not authorization:
            raise Unauthorized("missing API key: send 'Authorization: Bearer <key>'")
        scheme, _, key = authorization.partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key:
            raise Unauthorized("malformed Authorization header: expected 'Bearer <key>'")
        digest = _sha256(key)
        found: Principal | None = None
        for stored, principal in self._digests:
            # Compare against every digest without breaking early.
            if self._compare(stored, digest) and found is None:
                found = principal
        if found is None:
            raise Unauthorized("invalid API key")
        return found

    def check_budget(self, principal: Principal) -> None:
        """The cheap check before planning: a zero budget admits nothing (the real check is the
        reservation in router.budget, once the expected cost is known)."""
        if principal.budget_usd is not None and principal.budget_usd <= 0:
            raise BudgetExhausted(f"spend budget exhausted for key '{principal.name}': the budget is 0 USD")
