"""`tune collect` over real HTTP against a fake OpenAI-compatible server; answer scoring."""

from __future__ import annotations

import json
import re

import pytest

from policies.tuning import cli, collect, datasets
from tests.support.fake_openai import FakeOpenAI


def _adder(model: str, body: dict) -> str:
    """`good` adds "What is A+B?" correctly, `bad` always says 0 (answers in GSM8K's `#### N` form)."""
    m = re.search(r"What is (\d+)\+(\d+)", body["messages"][-1]["content"])
    val = int(m.group(1)) + int(m.group(2)) if (m and model == "good") else 0
    return f"The sum is {val}. #### {val}"


ANSWER_WORDS = len(_adder("good", {"messages": [{"content": "What is 1+2?"}]}).split())  # usage as the fake counts


def _server() -> FakeOpenAI:
    return FakeOpenAI(api_key=None, answer=_adder, models=("auto", "good", "bad"), reject_unknown_models=True)


def _posts(srv: FakeOpenAI) -> list[dict]:
    return [r.body for r in srv.requests if r.method == "POST"]


@pytest.mark.parametrize(
    ("answer", "gold", "kind", "ok"),
    [
        ("so 9 * 2 = 18\n#### 18", "18", "number", True),
        ("The answer is $1,250.", "1250", "number", True),
        ("It is 17, then 18 minus 1 is 17", "17", "number", True),
        ("#### 19", "18", "number", False),
        ("The answer is (C).", "C", "choice", True),
        ("B. because", "B", "choice", True),
        ("I think A", "D", "choice", False),
    ],
)
def test_scoring(answer, gold, kind, ok):
    assert collect.is_correct(answer, gold, kind) is ok


def _bench(tmp_path, n=5):
    p = tmp_path / "bench.jsonl"
    p.write_text("".join(json.dumps({"prompt": f"What is {i}+{i + 1}?", "answer": str(2 * i + 1)}) + "\n"
                         for i in range(1, n + 1)))
    return p


def test_collect_end_to_end_resumes_and_loads_as_table(tmp_path, capsys):
    bench, out = _bench(tmp_path), tmp_path / "collected.jsonl"
    with _server() as srv:
        argv = ["collect", "--base-url", srv.url, "--bench", str(bench), "--out", str(out),
                "--limit", "4", "--json"]
        assert cli.main(argv) == 0
        first = json.loads(capsys.readouterr().out)
        assert first["targets"] == ["good", "bad"] and first["asked"] == 8 and first["errors"] == 0
        sent = _posts(srv)[0]
        assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}
        assert {r["model"] for r in _posts(srv)} == {"good", "bad"}
        # resume: nothing left to ask for the same limit; one more item asks 2 more
        assert cli.main(argv) == 0
        assert json.loads(capsys.readouterr().out)["asked"] == 0
        assert cli.main([*argv[:-3], "--limit", "5", "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["asked"] == 2
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(recs) == 10
    assert all(r["ttft_ms"] <= r["e2e_ms"] and r["completion_tokens"] == ANSWER_WORDS for r in recs)
    table = datasets.load_file(out)
    assert len(table) == 5 and table.targets == ["bad", "good"]
    assert table.quality[:, table.col("good")].tolist() == [1.0] * 5
    assert table.quality[:, table.col("bad")].tolist() == [0.0] * 5
    assert table.e2e_ms is not None and table.tokens_out is not None


def test_collect_records_errors_and_retries_them(tmp_path):
    import asyncio

    bench, out = _bench(tmp_path, 2), tmp_path / "c.jsonl"
    items = collect.load_bench(str(bench), None, None)
    with _server() as srv:
        s = asyncio.run(collect.collect(srv.url, items, out, ["good", "missing"], progress=False))
        assert s["errors"] == 2
        s = asyncio.run(collect.collect(srv.url, items, out, ["good", "missing"], progress=False))
        assert s["asked"] == 2 and s["skipped"] == 2  # failed pairs are asked again


def test_gsm8k_bench_from_shared_data(routellm):
    items = collect.load_bench("gsm8k", str(routellm), 3)
    assert len(items) == 3 and items[0]["gold"] == "18" and items[0]["kind"] == "number"


def test_collected_table_evaluates_end_to_end(tmp_path, capsys):
    bench, out = _bench(tmp_path, 12), tmp_path / "collected.jsonl"
    with _server() as srv:
        assert cli.main(["collect", "--base-url", srv.url, "--bench", str(bench), "--out", str(out),
                         "--json"]) == 0
    capsys.readouterr()
    assert cli.main(["eval", "--data", str(out), "--cv", "3", "--policies", "length", "--json",
                     "--quiet"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["strong"] == "good" and report["weak"] == "bad" and report["n"] == 12
    assert {p["name"] for p in report["policies"]} == {"random", "oracle", "length"}
