"""The command line on hostile input (issue 14): whatever file a command is given (empty, binary,
not UTF-8, huge, nested too deeply, JSON of the wrong shape, a folder, a missing path, or a
seeded mutation of valid data), it prints no traceback, exits 0 or 2, keeps stderr to one short
line, never echoes a secret planted in the input, and reports every failure as a typed error
rather than through the last-resort guard."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import random
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import tokenlean as tl
from tokenlean.bench import _cache_pairs, _cache_stream, _memory, _retrieval
from tokenlean.cli import _cache_commands, main
from tokenlean.testing import HashingEmbedder

SECRET = "tkl-planted-secret-9f3a1c"
MAX_STDERR_BYTES = 400
SEED = 20261127

# ----------------------------------------------------------------------------- hostile files


def _nested(depth: int, leaf: Any = 1) -> Any:
    value = leaf
    for _ in range(depth):
        value = [value]
    return value


WRONG_TYPES = {
    "text": 5, "answer": None, "text_a": [SECRET], "text_b": {}, "label": SECRET,
    "messages": SECRET, "conversation": [SECRET], "qa": SECRET, "_id": [1],
}  # fmt: skip


def hostile_files(rng: random.Random) -> dict[str, bytes]:
    """Every kind of bad file, each with the secret inside where there is room for it."""
    secret = SECRET.encode()
    huge_line = json.dumps({"prompt": SECRET * 40_000, "n": 1}).encode()  # about 1 MB, one line
    return {
        "empty": b"",
        "blank_lines": b"\n\n  \n\r\n",
        "binary": bytes(rng.randrange(256) for _ in range(4096)) + secret + b"\x00\xff",
        "nul_bytes": b"\x00" * 64 + secret,
        "latin1": "café au lait ".encode("latin-1") + secret + b"\n",
        "utf16": json.dumps({"text": SECRET, "answer": "a"}).encode("utf-16"),
        "huge_one_line": huge_line * 3,
        "huge_text": (f"a line of text with {SECRET} in it\n" * 70_000).encode(),
        "nested_lists": b"[" * 100_000 + b"]" * 100_000,
        "nested_objects": b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
        "nested_under_limit": json.dumps({"text": _nested(900, SECRET), "answer": "a"}).encode(),
        "number": b"42\n",
        "huge_number": b"1" * 5000 + b"\n",
        "list": b"[1, 2, 3]\n",
        "string": json.dumps(SECRET).encode() + b"\n",
        "null": b"null\n",
        "wrong_keys": json.dumps({"foo": SECRET, "bar": [SECRET]}).encode() + b"\n",
        "wrong_types": json.dumps(WRONG_TYPES).encode() + b"\n",
        "lines_of_lists": (json.dumps([SECRET, 1]) + "\n").encode() * 3,
        "truncated_json": json.dumps({"text": SECRET, "answer": "a"}).encode()[:-3],
        "tsv_junk": f"1\t{SECRET}\n\t\t\t\n0\tonly\ttwo\n".encode(),
        "lone_surrogate": b'{"text": "\\ud800 ' + secret + b'", "answer": "a"}\n',
    }


# ----------------------------------------------------------------------------- valid samples

TURN = {"speaker": "Ann", "dia_id": "D1:1", "text": "I moved to Lisbon last May."}
SAMPLES: dict[str, Any] = {
    "stream": [{"text": f"how do I reset my password {i % 3}", "answer": str(i % 3)}
               for i in range(6)],
    "pairs-jsonl": [{"text_a": f"where is order {i}", "text_b": f"where's my order {i}",
                     "label": i % 2} for i in range(6)],
    "gptcache": [{"origin": f"what is tokenlean {i}", "similar": f"tell me about tokenlean {i}"}
                 for i in range(4)],
    "locomo": {
        "conversation": {
            "speaker_a": "Ann", "speaker_b": "Bob", "session_1_date_time": "1 May 2023",
            "session_1": [TURN, {"speaker": "Bob", "dia_id": "D1:2", "text": "Nice, why?"}],
            "session_2": [{"speaker": "Ann", "dia_id": "D2:1", "text": "For a new job."}],
        },
        "qa": [{"question": "Where did Ann move?", "answer": "Lisbon", "evidence": ["D1:1"],
                "category": 1},
               {"question": "Why did Ann move?", "answer": "a job", "evidence": ["D2:1"],
                "category": 4}],
    },
    "audit": [
        {"request": {"model": "gpt-4o-mini", "messages": [
            {"role": "system", "content": "You help."}, {"role": "user", "content": "hi"}]},
         "route": "support", "usage": {"prompt_tokens": 12}, "latency_ms": 300},
        {"model": "gpt-4o", "messages": [{"role": "user", "content": "refund?"}],
         "tools": [{"type": "function", "function": {"name": "lookup", "parameters": {}}}]},
        {"input": [{"role": "user", "content": "hello"}], "model": "gpt-4o",
         "usage": {"input": 5, "output": 2}, "startTime": "2026-01-01T00:00:00Z",
         "endTime": "2026-01-01T00:00:01Z", "metadata": {"route": "chat"}},
        {"inputs": {"messages": [[{"lc": 1, "id": ["HumanMessage"], "kwargs": {"content": "x"}}]]},
         "extra": {"invocation_params": {"model": "gpt-4o"}}, "prompt_tokens": 3},
    ],
    "beir-corpus": [{"_id": f"d{i}", "title": f"Doc {i}", "text": f"fact number {i} is true"}
                    for i in range(4)],
    "metrics": {
        "headline": {"cache_hit_rate": {"exact": {"hits": 1, "lookups": 3, "hit_rate": 0.3333}},
                     "effective_tokens_per_task": 1280.0,
                     "latency_by_prompt_size": {"<1k": {"p50_ms": 300.0, "p95_ms": 400.0,
                                                        "n": 2}},
                     "cost_per_accepted_outcome_usd": 0.0002},
        "totals": {"requests": 2, "errors": 0, "input_tokens": 1200, "output_tokens": 80,
                   "cost_usd": 0.000228, "tasks_done": 1, "unpriced_models": ["local"]},
        "semantic_cache": {"faq": {"evidence": 60, "serving": True, "error_upper_bound": 0.04,
                                   "max_error_rate": 0.05}},
    },
}  # fmt: skip
MRPC = "1\t1\t2\tthe cat sat\ta cat was sitting\n0\t3\t4\tit rains\tthe sun shines\n" * 3


def _jsonl(rows: list[Any]) -> bytes:
    return "".join(json.dumps(row) + "\n" for row in rows).encode()


_POOL: list[Any] = [0, -1, 3.5, 1e300, True, None, "", SECRET, "\u2028\x1b[2J", [], [SECRET],
                    {}, {"x": SECRET}, _nested(60), 10**30]  # fmt: skip


def _nodes(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield path
    if isinstance(value, dict):
        for key, child in value.items():
            yield from _nodes(child, (*path, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield from _nodes(child, (*path, index))


def mutate(value: Any, rng: random.Random) -> Any:
    """One seeded structural mutation: a node replaced, a key dropped or added, or a node
    wrapped in a list."""
    value = copy.deepcopy(value)
    path = rng.choice(list(_nodes(value)))
    if not path:
        return rng.choice(_POOL)
    parent = value
    for step in path[:-1]:
        parent = parent[step]
    last = path[-1]
    action = rng.randrange(4)
    if action == 0:
        parent[last] = copy.deepcopy(rng.choice(_POOL))
    elif action == 1 and isinstance(parent, dict):
        del parent[last]
    elif action == 2 and isinstance(parent[last], dict):
        parent[last][SECRET] = copy.deepcopy(rng.choice(_POOL))
    else:
        parent[last] = [parent[last]]
    return value


def mutate_bytes(data: bytes, rng: random.Random) -> bytes:
    """One seeded byte-level mutation: bytes flipped, the end cut, or junk inserted."""
    data = bytearray(data)
    action = rng.randrange(3)
    if action == 0:
        for _ in range(rng.randrange(1, 6)):
            data[rng.randrange(len(data))] = rng.randrange(256)
    elif action == 1:
        del data[rng.randrange(len(data)) :]
    else:
        data[rng.randrange(len(data)) : 0] = rng.choice([b"\t", b"\n", b"\x00", b"\xff", b"\t\t"])
    return bytes(data)


def mutants(rng: random.Random, per_format: int = 6) -> list[tuple[str, str, bytes]]:
    """``(format, label, content)`` of seeded mutations of each format's valid sample."""
    out = []
    for fmt, sample in SAMPLES.items():
        for i in range(per_format):
            if isinstance(sample, list) and rng.random() < 0.7:  # one line of a JSONL file
                rows = list(sample)
                index = rng.randrange(len(rows))
                rows[index] = mutate(rows[index], rng)
                content = _jsonl(rows) if fmt != "gptcache" else json.dumps(rows).encode()
            else:
                mutated = mutate(sample, rng)
                if fmt == "gptcache" or fmt == "locomo" or not isinstance(mutated, list):
                    content = json.dumps(mutated).encode()
                else:
                    content = _jsonl(mutated)
            out.append((fmt, f"{fmt}-mutant{i}", content))
    out += [
        ("mrpc-tsv", f"mrpc-tsv-mutant{i}", mutate_bytes(MRPC.encode(), rng))
        for i in range(per_format)
    ]
    return out


# ----------------------------------------------------------------------------- the commands


def _store(folder: Path) -> Path:
    path = folder / "cache.db"
    store = tl.SQLiteStore(path)
    store.put(tl.StoredEntry("ns", "key", b'{"content": "' + SECRET.encode() + b'"}', 0.0))
    store.close()
    return path


def _beir(folder: Path, part: str, source: Path) -> Path:
    """A BEIR folder whose ``part`` (corpus, queries or qrels) is ``source`` (a file, a folder
    or a missing path)."""
    beir = folder / "beir"
    (beir / "qrels").mkdir(parents=True)
    (beir / "corpus.jsonl").write_bytes(_jsonl(SAMPLES["beir-corpus"]))
    (beir / "queries.jsonl").write_bytes(b'{"_id": "q1", "text": "fact number 1"}\n')
    (beir / "qrels" / "train.tsv").write_bytes(b"query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    target = {"corpus": "corpus.jsonl", "queries": "queries.jsonl", "qrels": "qrels/train.tsv"}
    path = beir / target[part]
    path.unlink()
    if source.is_dir():
        path.mkdir()
    elif source.exists():
        path.write_bytes(source.read_bytes())
    return beir


Argv = Callable[[Path, Path], list[str]]  # (input path, scratch folder) -> argv
COMMANDS: dict[str, Argv] = {
    "count": lambda p, d: ["count", str(p)],
    "audit": lambda p, d: ["audit", str(p)],
    "audit-near": lambda p, d: ["audit", str(p), "--near-duplicates", "0.9",
                                "--html", str(d / "a.html")],
    "bench-stream": lambda p, d: ["bench", "cache", "--stream", str(p)],
    "bench-pairs-jsonl": lambda p, d: ["bench", "cache", "--pairs", str(p),
                                       "--format", "pairs-jsonl"],
    "bench-gptcache": lambda p, d: ["bench", "cache", "--pairs", str(p), "--format", "gptcache"],
    "bench-mrpc": lambda p, d: ["bench", "cache", "--pairs", str(p), "--format", "mrpc-tsv"],
    "bench-stsb": lambda p, d: ["bench", "cache", "--pairs", str(p), "--format", "stsb-tsv"],
    "bench-memory": lambda p, d: ["bench", "memory", str(p)],
    "bench-beir-corpus": lambda p, d: ["bench", "retrieval", "--beir",
                                       str(_beir(d, "corpus", p))],
    "bench-beir-queries": lambda p, d: ["bench", "retrieval", "--beir",
                                        str(_beir(d, "queries", p))],
    "bench-beir-qrels": lambda p, d: ["bench", "retrieval", "--beir",
                                      str(_beir(d, "qrels", p))],
    "calibrate-stream": lambda p, d: ["cache", "calibrate", str(p), "--store", str(d / "s.db")],
    "calibrate-pairs": lambda p, d: ["cache", "calibrate", str(p), "--store", str(d / "s.db"),
                                     "--format", "pairs-jsonl"],
    "calibrate-into": lambda p, d: ["cache", "calibrate", str(_stream_file(d)), "--store",
                                    str(p), "--route", "faq"],
    "acceptance": lambda p, d: ["cache", "acceptance", str(p)],
    "stats": lambda p, d: ["cache", "stats", str(p)],
    "list": lambda p, d: ["cache", "list", str(p), "--json"],
    "invalidate": lambda p, d: ["cache", "invalidate", str(p), "--tenant", "acme"],
    "clear": lambda p, d: ["cache", "clear", str(p), "--yes"],
    "metrics": lambda p, d: ["metrics", str(p)],
}  # fmt: skip
"""Every command that reads a file; ``canonicalize`` prints its input by design and is
checked for tracebacks only (see :func:`test_canonicalize_never_fails_with_a_traceback`)."""

FORMAT_COMMANDS = {
    "stream": ["bench-stream", "calibrate-stream"],
    "pairs-jsonl": ["bench-pairs-jsonl", "calibrate-pairs"],
    "gptcache": ["bench-gptcache"],
    "mrpc-tsv": ["bench-mrpc"],
    "locomo": ["bench-memory"],
    "audit": ["audit", "audit-near"],
    "beir-corpus": ["bench-beir-corpus"],
    "metrics": ["metrics"],
}


def _stream_file(folder: Path) -> Path:
    path = folder / "stream.jsonl"
    path.write_bytes(_jsonl(SAMPLES["stream"]))
    return path


# ----------------------------------------------------------------------------- running


@dataclass
class Run:
    label: str
    argv: list[str]
    code: int
    out: str
    err: str

    def problems(self, *, secret_on_stdout: bool = True) -> list[str]:
        found = []
        if "Traceback" in self.err:
            found.append("a traceback")
        if self.code not in (0, 2):
            found.append(f"exit status {self.code}")
        if len(self.err.encode()) > MAX_STDERR_BYTES:
            found.append(f"{len(self.err.encode())} bytes on stderr")
        if SECRET in self.err or (secret_on_stdout and SECRET in self.out):
            found.append("the planted secret echoed")
        if "unexpected" in self.err:
            found.append("an untyped error (the last-resort guard)")
        errors = [line for line in self.err.splitlines() if line.startswith("tokenlean: error: ")]
        if self.code == 2 and (len(errors) != 1 or not self.err.rstrip().endswith(errors[0])):
            found.append("not one error line, last on stderr")
        return found

    def __str__(self) -> str:
        return f"{self.label}: {self.argv[:3]} -> {self.code}: {self.err.strip()[:160]!r}"


def run_in_process(label: str, argv: list[str]) -> Run:
    out, err = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(argv)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    return Run(label, argv, code, out.getvalue(), err.getvalue())


@pytest.fixture
def fast_embedder(monkeypatch: pytest.MonkeyPatch) -> None:
    """Commands that get past their input embed with the hashing fake, not the real model."""
    for module in (_cache_pairs, _cache_stream, _memory, _retrieval, _cache_commands):
        monkeypatch.setattr(module, "default_embedder", lambda: HashingEmbedder())
    import tokenlean._embeddings as embeddings

    monkeypatch.setattr(embeddings, "default_embedder", lambda: HashingEmbedder())


def _case(folder: Path, name: str, content: bytes | None) -> Path:
    """A fresh copy of an input (None: a missing path; ``"folder"``: a folder)."""
    folder.mkdir(parents=True)
    path = folder / f"{name}.input"
    if name == "folder":
        path.mkdir()
    elif content is not None:
        path.write_bytes(content)
    return path


def _foreign_db(path: Path) -> bytes:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE secrets (value TEXT)")
    conn.execute("INSERT INTO secrets VALUES (?)", (SECRET,))
    conn.commit()
    conn.close()
    return path.read_bytes()


def test_every_command_survives_every_hostile_file(tmp_path: Path, fast_embedder: None) -> None:
    """Each file-reading command, on every hostile file, a folder and a missing path: no
    traceback, status 0 or 2, one short typed error line, no planted secret echoed."""
    files: dict[str, bytes | None] = dict(hostile_files(random.Random(SEED)))
    files["folder"] = b""
    files["missing"] = None
    files["foreign_sqlite"] = _foreign_db(tmp_path / "foreign.db")
    truncated = _store(tmp_path / "truncated")
    files["damaged_store"] = truncated.read_bytes()[:3000] + b"\x00" * 1000
    failures = []
    for command, argv in COMMANDS.items():
        for name, content in files.items():
            folder = tmp_path / command / name
            run = run_in_process(f"{command}/{name}", argv(_case(folder, name, content), folder))
            if run.problems():
                failures.append(f"{run} ({', '.join(run.problems())})")
    assert not failures, "\n".join(failures)


def test_every_command_survives_mutations_of_valid_data(
    tmp_path: Path, fast_embedder: None
) -> None:
    """Seeded mutations of each format's valid data (a value of another type, a key dropped or
    added, a byte flipped): every command either runs or fails with one typed error line."""
    failures = []
    outcomes = {0: 0, 2: 0}
    for fmt, label, content in mutants(random.Random(SEED), per_format=25):
        for command in FORMAT_COMMANDS[fmt]:
            folder = tmp_path / command / label
            path = _case(folder, label, content)
            run = run_in_process(f"{command}/{label}", COMMANDS[command](path, folder))
            outcomes[run.code] = outcomes.get(run.code, 0) + 1
            # audit and metrics print the names (routes, models) their input gives them
            if run.problems(secret_on_stdout=command not in ("audit", "audit-near", "metrics")):
                failures.append(f"{run} ({', '.join(run.problems())})")
    assert not failures, "\n".join(failures)
    assert outcomes[0] > 0  # the mutations reach both outcomes
    assert outcomes[2] > 0


def test_the_valid_samples_run(tmp_path: Path, fast_embedder: None) -> None:
    """The samples the mutations start from are valid: every command accepts them."""
    contents = {fmt: _jsonl(rows) if isinstance(rows, list) and fmt not in ("gptcache",)
                else json.dumps(rows).encode() for fmt, rows in SAMPLES.items()}  # fmt: skip
    contents["mrpc-tsv"] = MRPC.encode()
    for fmt, commands in FORMAT_COMMANDS.items():
        for command in commands:
            folder = tmp_path / command
            path = _case(folder, fmt, contents[fmt])
            run = run_in_process(command, COMMANDS[command](path, folder))
            assert run.code == 0, str(run)


def test_canonicalize_never_fails_with_a_traceback(tmp_path: Path) -> None:
    """canonicalize prints its input (canonicalized) by design; on hostile files it still
    never prints a traceback, and its errors are one short line."""
    for name, content in hostile_files(random.Random(SEED)).items():
        path = _case(tmp_path / name, name, content)
        run = run_in_process(name, ["canonicalize", str(path), "--max-bytes", "10000000"])
        assert run.code in (0, 2), str(run)
        assert "Traceback" not in run.err, str(run)
        assert "unexpected" not in run.err, str(run)
        if run.code == 2:
            assert len(run.err.encode()) <= MAX_STDERR_BYTES
            assert SECRET not in run.err


SUBPROCESS_CASES = [
    ("audit", "binary"),
    ("audit", "nested_lists"),
    ("bench-stream", "huge_one_line"),
    ("bench-pairs-jsonl", "wrong_keys"),
    ("bench-gptcache", "latin1"),
    ("bench-mrpc", "huge_text"),
    ("bench-memory", "string"),
    ("bench-beir-corpus", "lines_of_lists"),
    ("calibrate-stream", "nested_objects"),
    ("calibrate-pairs", "empty"),
    ("acceptance", "binary"),
    ("stats", "huge_text"),
    ("clear", "folder"),
    ("count", "missing"),
]


def test_the_installed_command_survives_hostile_files(tmp_path: Path) -> None:
    """Through the installed ``tokenlean`` entry point (a representative subset): no traceback,
    status 2, one short line, no secret."""
    files: dict[str, bytes | None] = dict(hostile_files(random.Random(SEED)))
    files.update(folder=b"", missing=None)
    script = Path(sys.executable).with_name("tokenlean")

    def one(case: tuple[str, str]) -> Run:
        command, name = case
        folder = tmp_path / command / name
        argv = COMMANDS[command](_case(folder, name, files[name]), folder)
        done = subprocess.run(
            [str(script), *argv], capture_output=True, text=True, errors="replace", timeout=120,
            env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"},
        )  # fmt: skip
        return Run(f"{command}/{name}", argv, done.returncode, done.stdout, done.stderr)

    with ThreadPoolExecutor(max_workers=2) as pool:
        runs = list(pool.map(one, SUBPROCESS_CASES))
    failures = [f"{run} ({', '.join(run.problems())})" for run in runs if run.problems()]
    assert not failures, "\n".join(failures)
    assert all(run.code == 2 for run in runs), "\n".join(map(str, runs))
    assert all(run.err.startswith("tokenlean: error: ") for run in runs)
