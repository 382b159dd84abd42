"""tokenlean audit: reading request logs and the figures it reports."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import tokenlean as tl
from tokenlean._audit.log_audit import audit_log, read_request_log
from tokenlean.cli import main
from tokenlean.cli._audit import write_sample_log
from tokenlean.testing import HashingEmbedder

POLICY = "You are the support agent. " * 300  # about 1,800 tokens: above the 1,024 minimum


def line(
    user: str, *, now: str = "2026-11-27T10:00:00Z", history: int = 0, route: str = "r"
) -> str:
    messages = [{"role": "system", "content": f"{POLICY} Now: {now}"}]
    for i in range(history):
        messages += [{"role": "user", "content": f"old question {i}"},
                     {"role": "assistant", "content": f"old answer {i}"}]  # fmt: skip
    messages.append({"role": "user", "content": user})
    return json.dumps({"request": {"model": "gpt-4o-mini", "messages": messages},
                       "route": route, "latency_ms": 500})  # fmt: skip


def test_the_audit_finds_duplicates_history_and_unstable_prefixes(tmp_path: Path) -> None:
    """Exact duplicates, history share, and timestamps that break the raw prefix are reported."""
    log = tmp_path / "log.jsonl"
    log.write_text("\n".join([
        line("where is my order?", now="2026-11-27T10:00:00Z"),
        line("where is my order?", now="2026-11-27T10:00:00Z"),
        line("and my refund?", now="2026-11-27T10:05:00Z", history=3),
        line("how can I pay?", now="2026-11-27T10:09:00Z"),
    ]), encoding="utf-8")  # fmt: skip
    report = audit_log(read_request_log(log)).to_json()
    assert report["requests"] == 4
    assert report["exact_duplicates"]["requests"] == 1
    assert report["history_share"] > 0
    route = report["routes"]["r"]
    assert route["distinct_raw_prefixes"] == 3
    assert route["distinct_static_prefixes"] == 1
    assert route["reaches_provider_minimum"] is True
    assert report["savings_tokens"]["prefix_cache"] > 0  # canonical prefixes would be cached
    assert report["savings_usd"]["exact_cache"] > 0


def test_near_duplicates_are_counted_with_embeddings(tmp_path: Path) -> None:
    """Paraphrased user turns above the threshold count as near-duplicates."""
    log = tmp_path / "log.jsonl"
    log.write_text("\n".join([line("where is my order now"), line("where is my order"),
                              line("how do I pay by card")]), encoding="utf-8")  # fmt: skip
    report = audit_log(read_request_log(log), near_duplicates=0.8,
                       embedder=HashingEmbedder(64)).to_json()  # fmt: skip
    assert report["near_duplicates"]["pairs"] == 1


@pytest.mark.parametrize(
    "content",
    [
        "not json",
        '["a list"]',
        '{"request": {"model": "x"}}',
        '{"model": 17, "messages": [{"role": "user", "content": "q"}]}',
        '{"model": "m", "messages": []}',
        '{"model": "m", "messages": [{"role": "wizard", "content": "q"}]}',
        '{"model": "m", "messages": ["q"]}',
        '{"request": {"model": "m", "messages": [{"role": "user", "content": "q"}]},'
        ' "usage": {"prompt_tokens": -500}}',
        '{"request": {"model": "m", "messages": [{"role": "user", "content": "q"}]},'
        ' "usage": {"completion_tokens": "lots"}}',
        '{"request": {"model": "m", "messages": [{"role": "user", "content": "q"}]},'
        ' "latency_ms": "fast"}',
        '{"request": {"model": "m", "messages": [{"role": "user", "content": "q"}]}, "route": 5}',
    ],
)
def test_malformed_logs_name_the_line(tmp_path: Path, content: str) -> None:
    """A bad line raises InvalidInputError with its line number."""
    log = tmp_path / "log.jsonl"
    log.write_text(line("ok") + "\n" + content + "\n", encoding="utf-8")
    with pytest.raises(tl.InvalidInputError, match=":2:"):
        audit_log(read_request_log(log))


def test_the_command_writes_json_and_html(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`tokenlean audit LOG --generate N --json --html F` works end to end."""
    log, page = tmp_path / "sample.jsonl", tmp_path / "audit.html"
    main(["audit", str(log), "--generate", "60", "--json", "--html", str(page)])
    report = json.loads(capsys.readouterr().out)
    assert report["requests"] == 60
    assert "Estimated savings" in page.read_text(encoding="utf-8")
    assert write_sample_log(tmp_path / "again.jsonl", 5).read_text().count("\n") == 5


def test_langsmith_runs_and_langfuse_generations_are_read(tmp_path: Path) -> None:
    """A LangSmith LLM run (LangChain-serialized messages) and a Langfuse generation read as
    the same chat request as the envelope form, with usage, latency and route."""
    system, user = f"{POLICY} Now: 2026-11-27T10:00:00Z", "Where is my order?"

    def lc(kind: str, content: str) -> dict[str, object]:
        return {"lc": 1, "type": "constructor", "id": ["langchain", "schema", "messages", kind],
                "kwargs": {"content": content}}  # fmt: skip

    langsmith = {
        "name": "ChatOpenAI",
        "run_type": "llm",
        "start_time": "2026-11-27T10:00:00.000000",
        "end_time": "2026-11-27T10:00:00.812000",
        "extra": {"invocation_params": {"model_name": "gpt-4o-mini", "_type": "openai-chat"}},
        "inputs": {"messages": [[lc("SystemMessage", system), lc("HumanMessage", user)]]},
        "prompt_tokens": 1873,
        "completion_tokens": 64,
    }
    langfuse = {
        "type": "GENERATION",
        "startTime": "2026-11-27T10:00:00.000Z",
        "endTime": "2026-11-27T10:00:00.500Z",
        "model": "gpt-4o-mini",
        "input": [{"role": "system", "content": system}, {"role": "user", "content": user}],
        "usage": {"input": 1873, "output": 64, "total": 1937, "unit": "TOKENS"},
        "metadata": {"route": "support"},
    }
    log = tmp_path / "mixed.jsonl"
    log.write_text(
        "\n".join(json.dumps(row) for row in (langsmith, langfuse)) + "\n" + line(user) + "\n",
        encoding="utf-8",
    )
    rows = [row for _, row in read_request_log(log)]
    expected = [{"role": "system", "content": system}, {"role": "user", "content": user}]
    for row in rows:
        assert row["request"]["messages"] == expected
        assert row["request"]["model"] == "gpt-4o-mini"
    assert [r["usage"].get("prompt_tokens") for r in rows[:2]] == [1873, 1873]
    assert [r["latency_ms"] for r in rows] == [812.0, 500.0, 500]
    assert rows[1]["route"] == "support"
    report = audit_log(read_request_log(log)).to_json()
    assert report["exact_duplicates"]["requests"] == 2  # the same request, three formats


def test_langsmith_streamed_and_chat_messages_and_clocks_that_disagree(tmp_path: Path) -> None:
    """A LangSmith run's AIMessageChunk is an assistant turn, a ChatMessage has its own role,
    and an end time before the start time gives no latency rather than an error."""

    def lc(kind: str, **fields: str) -> dict[str, object]:
        return {"lc": 1, "id": ["langchain", "schema", "messages", kind], "kwargs": fields}

    run = {
        "inputs": {
            "messages": [
                [
                    lc("HumanMessage", content="hi"),
                    lc("AIMessageChunk", content="hello"),
                    lc("ChatMessage", content="and?", role="user"),
                ]
            ]
        },
        "extra": {"invocation_params": {"model": "gpt-4o-mini"}},
        "start_time": "2026-01-01T00:00:01Z",
        "end_time": "2026-01-01T00:00:00Z",
    }
    log = tmp_path / "runs.jsonl"
    log.write_text(json.dumps(run) + "\n", encoding="utf-8")
    [(_, envelope)] = list(read_request_log(log))
    assert [m["role"] for m in envelope["request"]["messages"]] == ["user", "assistant", "user"]
    assert envelope["latency_ms"] is None
