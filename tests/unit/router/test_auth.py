"""Bearer keys: 401/403/429, per-key defaults, hashed storage and constant-time comparison."""

from __future__ import annotations

import hashlib
import hmac
import inspect
import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from router.auth import AuthConfig, KeyEntry, KeyStore
from tests.unit.router.fakes import Rig, chat_body

KEYS = [
    {"name": "alice", "key": "rk-alice-0123456789"},
    {"name": "bob", "key": "rk-bob-0123456789", "allowed_targets": ["small"]},
    {"name": "carol", "key_sha256": hashlib.sha256(b"rk-carol-0123456789").hexdigest(),
     "constraints": {"min_quality": 0.9}},
    {"name": "dave", "key": "rk-dave-0123456789", "budget_usd": 1e-7},
]


def store() -> KeyStore:
    return KeyStore.from_config(AuthConfig(keys_env="ROUTER_KEYS"), {"ROUTER_KEYS": json.dumps(KEYS)})


async def post(rig: Rig, key: str | None, body: dict[str, Any] | None = None) -> Any:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    async with rig.http() as http:
        return await http.post("/v1/chat/completions", json=body or chat_body(), headers=headers)


async def test_open_when_no_key_configured() -> None:
    s = KeyStore.from_config(AuthConfig(keys_env="UNSET_VAR"), {})
    assert s.open
    r = await post(Rig(auth=s), None)
    assert r.status_code == 200


@pytest.mark.parametrize("header", [None, "Bearer wrong-key", "Basic rk-alice-0123456789", "Bearer "])
async def test_missing_or_invalid_key_is_401(header: str | None) -> None:
    rig = Rig(auth=store())
    async with rig.http() as http:
        r = await http.post(
            "/v1/chat/completions", json=chat_body(), headers={"authorization": header} if header else {}
        )
    assert r.status_code == 401
    assert r.json()["error"]["type"] == "authentication_error"
    assert "wrong-key" not in r.text and "rk-alice" not in r.text


async def test_valid_key_with_openai_client_and_hashed_entry() -> None:
    rig = Rig(auth=store())
    resp = await rig.openai(api_key="rk-alice-0123456789").chat.completions.create(
        model="auto", messages=[{"role": "user", "content": "x"}]
    )
    assert resp.model == "small"
    # carol is configured by digest only; her default constraints send her to the strong target
    raw = await rig.openai(api_key="rk-carol-0123456789").chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": "x"}]
    )
    assert raw.headers["x-router-target"] == "api"


async def test_per_key_allowed_targets() -> None:
    rig = Rig(auth=store())
    r = await post(rig, "rk-bob-0123456789", chat_body() | {"model": "big"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "target_not_allowed"
    # auto only considers bob's targets, even when asked for more quality than they offer
    r = await post(rig, "rk-bob-0123456789", chat_body(routing={"min_quality": 0.3}))
    assert r.status_code == 200 and r.headers["x-router-target"] == "small"
    r = await post(rig, "rk-bob-0123456789", chat_body(routing={"min_quality": 0.9}))
    assert r.status_code == 422
    async with rig.http() as http:
        models = await http.get("/v1/models", headers={"authorization": "Bearer rk-bob-0123456789"})
    assert [m["id"] for m in models.json()["data"]] == ["auto", "small"]


async def test_models_requires_key_when_configured() -> None:
    async with Rig(auth=store()).http() as http:
        assert (await http.get("/v1/models")).status_code == 401


async def test_request_that_would_overspend_is_429_before_any_upstream_call() -> None:
    rig = Rig(auth=store())  # dave's 1e-7 USD is less than any request's expected cost
    r = await post(rig, "rk-dave-0123456789")
    assert r.status_code == 429 and r.json()["error"]["code"] == "budget_exhausted"
    assert all(not f.calls for f in rig.fakes.values())
    assert (await post(rig, "rk-alice-0123456789")).status_code == 200  # other keys are unaffected


def _budgeted(budget: float) -> KeyStore:
    keys = [{"name": "erin", "key": "rk-erin-0123456789", "budget_usd": budget}]
    return KeyStore.from_config(AuthConfig(keys_env="K"), {"K": json.dumps(keys)})


async def test_spend_never_passes_the_budget_and_usage_shows_it() -> None:
    rig = Rig(auth=_budgeted(2e-5))
    body = chat_body(max_tokens=4)  # the reservation covers the whole answer
    codes, charged = [], 0.0
    for _ in range(40):
        r = await post(rig, "rk-erin-0123456789", body)
        codes.append(r.status_code)
        if r.status_code == 200:
            charged += float(r.headers["x-router-cost-usd"])
    assert 200 in codes and codes[-1] == 429
    assert set(codes[codes.index(429):]) == {429}  # once gone, gone
    await rig.service.budget.flush()
    async with rig.http() as http:
        u = (await http.get("/v1/usage", headers={"authorization": "Bearer rk-erin-0123456789"})).json()
    assert u["key"] == "erin" and u["spent_usd"] == pytest.approx(charged) and u["spent_usd"] <= 2e-5
    assert u["budget_usd"] == 2e-5 and u["remaining_usd"] == pytest.approx(2e-5 - charged)


async def test_usage_is_only_the_callers_own() -> None:
    rig = Rig(auth=store())
    assert (await post(rig, "rk-alice-0123456789")).status_code == 200
    async with rig.http() as http:
        assert (await http.get("/v1/usage")).status_code == 401
        bob = (await http.get("/v1/usage", headers={"authorization": "Bearer rk-bob-0123456789"})).json()
        alice = (await http.get("/v1/usage", headers={"authorization": "Bearer rk-alice-0123456789"})).json()
    assert bob["key"] == "bob" and bob["spent_usd"] == 0 and "alice" not in json.dumps(bob)
    assert alice["spent_usd"] > 0 and alice["budget_usd"] is None


async def test_stream_spend_is_charged_at_end() -> None:
    rig = Rig(auth=_budgeted(1.0))
    async with rig.http() as http:
        r = await http.post("/v1/chat/completions", json=chat_body(stream=True),
                            headers={"authorization": "Bearer rk-erin-0123456789"})
    assert r.status_code == 200
    assert rig.service.budget.pending("erin") > 0


def test_constant_time_compare_is_used_against_every_key() -> None:
    assert inspect.signature(KeyStore.__init__).parameters["compare"].default is hmac.compare_digest
    seen: list[tuple[bytes, bytes]] = []

    def recording(a: bytes, b: bytes) -> bool:
        seen.append((a, b))
        return hmac.compare_digest(a, b)

    entries = [KeyEntry.model_validate(e) for e in KEYS]
    s = KeyStore(AuthConfig(), entries, compare=recording)
    assert s.authenticate("Bearer rk-alice-0123456789").name == "alice"  # first key: no early exit
    assert len(seen) == len(KEYS)
    assert all(b == hashlib.sha256(b"rk-alice-0123456789").digest() for _, b in seen)


def test_keys_are_stored_hashed_only() -> None:
    s = store()
    dump = repr(vars(s)) + repr(s._digests)
    for e in KEYS:
        if "key" in e:
            assert e["key"] not in dump
    assert "rk-alice" not in repr(KeyEntry(name="a", key="rk-alice-0123456789"))


def test_csv_env_and_key_file(tmp_path: Path) -> None:
    s = KeyStore.from_config(AuthConfig(keys_env="K"), {"K": "rk-one, rk-two"})
    assert s.key_count == 2 and s.authenticate("Bearer rk-two").name == "key-1"
    f = tmp_path / "keys.json"
    f.write_text(json.dumps([{"name": "filed", "key": "rk-file", "budget_usd": 1}]))
    s = KeyStore.from_config(AuthConfig(keys_file=str(f), default_budget_usd=5), {})
    p = s.authenticate("bearer rk-file")
    assert p.name == "filed" and p.budget_usd == 1


def test_defaults_apply_to_keys_without_their_own() -> None:
    cfg = AuthConfig(keys_env="K", default_allowed_targets=("big",), default_budget_usd=2.0,
                     default_constraints={"max_latency_ms": 500})
    p = KeyStore.from_config(cfg, {"K": "rk-x"}).authenticate("Bearer rk-x")
    assert p.allowed_targets == ("big",) and p.budget_usd == 2.0 and p.constraints.max_latency_ms == 500


def test_config_is_strict() -> None:
    with pytest.raises(ValidationError):
        AuthConfig(keys_env="K", colour="red")  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        KeyEntry(name="x")
    with pytest.raises(ValidationError):
        KeyEntry(name="x", key="a", key_sha256="0" * 64)
    with pytest.raises(ValueError, match="not valid JSON"):
        KeyStore.from_config(AuthConfig(keys_env="K"), {"K": "[{bad"})
    with pytest.raises(ValueError, match="key entry 0: colour") as info:
        leaky = '[{"name": "n", "key": "rk-leak", "colour": 1}]'
        KeyStore.from_config(AuthConfig(keys_env="K"), {"K": leaky})
    assert "rk-leak" not in str(info.value)
    assert all(f.description for f in AuthConfig.model_fields.values())
    assert all(f.description for f in KeyEntry.model_fields.values())


def test_clear_key_is_kept_only_as_its_digest_and_survives_a_json_round_trip() -> None:
    cfg = AuthConfig(keys=[KeyEntry(name="x", key="rk-x-0123456789")])
    dumped = cfg.model_dump(mode="json")  # how the app config reaches the ingress replicas
    assert "rk-x-0123456789" not in json.dumps(dumped)
    s = KeyStore(AuthConfig.model_validate(dumped))
    assert s.authenticate("Bearer rk-x-0123456789").name == "x"
