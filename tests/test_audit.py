"""tokenlean audit: reading request logs and the figures it reports."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import tokenlean as tl
from tokenlean._audit import audit_log, read_request_log
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


@pytest.mark.parametrize("content", ["not json", '["a list"]', '{"request": {"model": "x"}}'])
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
