"""Request-caused upstream rejections are 400s naming the field, never target failures (issue 12 item 1/8)."""

from __future__ import annotations

import pydantic
import pytest

from router.errors import BadGateway, BadRequest
from tests.unit.router.fakes import FakeTarget, Rig, chat_body

SECRET = "MY SECRET PROMPT"


class RayTaskErrorLike(Exception):
    """What Ray raises when it cannot derive a class from the cause's: the original only in `.cause`."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(f"task failed: {cause}")
        self.cause = cause


def _validation_error() -> pydantic.ValidationError:
    class Req(pydantic.BaseModel):
        temperature: float

    try:
        Req(temperature=SECRET)  # type: ignore[arg-type]
    except pydantic.ValidationError as e:
        return e
    raise AssertionError("unreachable")


CASES = [
    ("engine 4xx naming a field", BadRequest(f"model engine: temperature must be <= 2, got {SECRET}"),
     "temperature", "invalid_request"),
    ("engine validation error", RayTaskErrorLike(_validation_error()), "temperature", "invalid_request"),
    ("lone surrogate TypeError", TypeError(f"can't encode {SECRET}"), None, "invalid_request"),
    ("context length", BadRequest("This model's maximum context length is 2048 tokens. However, you requested "
                                  "3000 tokens"), "max_tokens", "context_length_exceeded"),
]


@pytest.mark.parametrize("name,error,param,code", CASES, ids=[c[0] for c in CASES])
async def test_rejection_is_a_400_naming_the_field_and_no_target_failure(name, error, param, code) -> None:
    fakes = {t: FakeTarget(t, fail_first=1000, error=error) for t in ("small", "big", "api")}
    rig = Rig(fakes)
    body = chat_body(SECRET, max_tokens=5, temperature=0.5)
    async with rig.http() as http:
        for _ in range(10):
            r = await http.post("/v1/chat/completions", json=body)
            assert r.status_code == 400, r.text
            err = r.json()["error"]
            assert err["code"] == code and err["type"] == "invalid_request_error"
            assert err.get("param") == param
            if param:
                assert param in err["message"]
            assert SECRET not in r.text and "--enable" not in r.text
    assert len(fakes["small"].calls) == 10 and not fakes["big"].calls  # no failover: others would refuse too
    assert all(rig.view.state(t) == "healthy" for t in ("small", "big", "api"))


async def test_target_fault_still_fails_over_and_counts() -> None:
    fakes = {"small": FakeTarget("small", fail_first=1000, error=RuntimeError("actor died")),
             "big": FakeTarget("big"), "api": FakeTarget("api")}
    rig = Rig(fakes)
    async with rig.http() as http:
        for _ in range(3):
            r = await http.post("/v1/chat/completions", json=chat_body())
            assert r.status_code == 200 and r.headers["x-router-target"] == "big"
    assert rig.view.state("small") == "cooling_down"
    assert isinstance(BadGateway("x"), Exception)


def test_engine_tool_flag_message_becomes_the_cluster_yaml_setting() -> None:
    from router.failures import rejected

    body = {"model": "m", "messages": [], "tools": [{"type": "function", "function": {"name": "f"}}]}
    e = rejected("m", BadRequest('model engine: "auto" tool choice requires --enable-auto-tool-choice and '
                                 "--tool-call-parser to be set"), body)
    assert e.status == 400 and e.param == "tools" and e.code == "tools_not_supported"
    assert "--" not in e.message and "supports_tools" in e.message and "engine_kwargs" in e.message
