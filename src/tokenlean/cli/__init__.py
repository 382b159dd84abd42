"""The ``tokenlean`` command line.

``tokenlean count FILE|-``, ``tokenlean canonicalize FILE|-``, ``tokenlean demo`` and
``tokenlean bench tokens``. Errors print one line on stderr and exit with status 2.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from tokenlean._canonical import canonical_json, canonicalize_text, fingerprint
from tokenlean._config import load_settings
from tokenlean._errors import ConfigurationError, MalformedRequestError, TokenleanError
from tokenlean._input import decode_text, looks_like_json, parse_chat_request, read_limited
from tokenlean._messages import count_request_tokens
from tokenlean._plan import PromptPlan
from tokenlean._tokens import describe_counter, get_token_counter
from tokenlean._volatile import mask_volatile

__all__ = ["app", "main"]

app = typer.Typer(
    name="tokenlean",
    help="Spend fewer LLM tokens for the same answers.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
bench_app = typer.Typer(
    help="Benchmarks that print figures (add --json for machine output). Without a subcommand:"
    " the end-to-end harness comparing four ways of building prompts.",
    invoke_without_command=True,
)
app.add_typer(bench_app, name="bench")
cache_app = typer.Typer(help="Give a semantic cache route evidence, and show what it learned.")
app.add_typer(cache_app, name="cache")


@bench_app.callback()
def bench_main(
    ctx: typer.Context,
    users: Annotated[int, typer.Option(help="Users in the generated workload.")] = 12,
    seed: Annotated[int, typer.Option(help="Workload seed.")] = 7,
    reports: Annotated[Path, typer.Option(help="Folder for report.html and result.json.")] = Path(
        "reports"
    ),
    model_factory: Annotated[
        str | None,
        typer.Option(
            help="module:callable returning a model for the harness instead of the simulated "
            "one (env TOKENLEAN_BENCH_MODEL_FACTORY); see docs/benchmarks.md."
        ),
    ] = None,
    variant: Annotated[
        list[str] | None,
        typer.Option(help="Run only this variant (repeatable; default: all four)."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Run the end-to-end harness when no benchmark subcommand is given."""
    if ctx.invoked_subcommand is not None:
        return
    from tokenlean._embeddings import default_embedder
    from tokenlean._harness.harness import VARIANTS, run_harness
    from tokenlean._harness.report import write_report
    from tokenlean._harness.workload import generate_workload

    factory = None
    spec = model_factory or os.environ.get("TOKENLEAN_BENCH_MODEL_FACTORY")
    if spec:
        import importlib

        module_name, _, attribute = spec.partition(":")
        try:
            factory = getattr(importlib.import_module(module_name), attribute)
        except (ImportError, AttributeError, ValueError) as exc:
            raise ConfigurationError(f"cannot load the model factory {spec!r}: {exc}") from exc
    from tokenlean.cli._harness_view import print_table, progress_bars

    chosen = [v for v in VARIANTS if v in (variant or VARIANTS)]
    if variant and len(chosen) < len(set(variant)):
        raise ConfigurationError(f"unknown variant in {variant}; known: {list(VARIANTS)}")
    with progress_bars(chosen) as progress:
        result = run_harness(
            generate_workload(users=users, seed=seed),
            embedder=default_embedder(),
            model_factory=factory,
            progress=progress,
            variants=chosen,
        )
    page = write_report(result, reports)
    typer.echo(f"report: {page}", err=True)
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    print_table(result)


InputKind = Literal["auto", "text", "request"]
SourceArg = Annotated[str, typer.Argument(help="A file path, or - for standard input.")]
ModelOpt = Annotated[
    str | None, typer.Option("--model", "-m", help="Model name; picks the tokenizer.")
]
AsOpt = Annotated[
    str,
    typer.Option(
        "--as", help="auto: a chat request if the input is JSON, else text; or text / request."
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]
MaxBytesOpt = Annotated[
    int | None,
    typer.Option("--max-bytes", help="Largest input accepted (TOKENLEAN_MAX_INPUT_BYTES)."),
]


def _read_source(source: str, max_bytes: int | None) -> str:
    limit = max_bytes or load_settings().max_input_bytes
    if source == "-":
        return decode_text(read_limited(sys.stdin.buffer, limit))
    path = Path(source)
    if not path.is_file():
        raise ConfigurationError(f"no such file: {source}")
    with path.open("rb") as stream:
        return decode_text(read_limited(stream, limit))


def _input_kind(text: str, requested: str) -> Literal["text", "request"]:
    if requested not in ("auto", "text", "request"):
        raise ConfigurationError(f"--as takes auto, text or request, not {requested!r}")
    if requested != "auto":
        return requested  # type: ignore[return-value]
    if not looks_like_json(text):
        return "text"
    try:
        parse_chat_request(text)
    except MalformedRequestError as exc:
        raise MalformedRequestError(
            f"the input looks like JSON but is not a chat request ({exc}); "
            "pass --as text to treat it as plain text"
        ) from exc
    return "request"


def _emit(payload: dict[str, Any], as_json: bool, lines: list[str]) -> None:
    if as_json:
        typer.echo(json.dumps(payload, ensure_ascii=False, indent=2))
    else:
        for line in lines:
            typer.echo(line)


@app.command()
def count(
    source: SourceArg,
    model: ModelOpt = None,
    kind: AsOpt = "auto",
    as_json: JsonOpt = False,
    max_bytes: MaxBytesOpt = None,
) -> None:
    """Count the tokens of a text, or of a JSON chat request (messages and tools)."""
    text = _read_source(source, max_bytes)
    if _input_kind(text, kind) == "text":
        counter = get_token_counter(model)
        name, approximate = describe_counter(counter)
        tokens = counter(text)
        _emit(
            {"kind": "text", "tokens": tokens, "counter": name, "approximate": approximate},
            as_json,
            [f"{tokens} tokens ({name}{', approximate' if approximate else ''})"],
        )
        return
    request = parse_chat_request(text)
    if model:
        request["model"] = model
    result = count_request_tokens(request, counter=get_token_counter(request.get("model")))
    payload = {
        "kind": "request",
        "tokens": result.total,
        "messages": list(result.per_message),
        "tools": result.tools,
        "reply_priming": result.reply_priming,
        "counter": result.counter,
        "approximate": result.is_approximate,
        "notes": list(result.notes),
    }
    lines = [
        f"{result.total} prompt tokens ({result.counter}"
        f"{', approximate' if result.is_approximate else ''})",
        f"  messages: {sum(result.per_message)} over {len(result.per_message)} messages",
        f"  tools: {result.tools}",
        f"  reply priming: {result.reply_priming}",
        *(f"  note: {note}" for note in result.notes),
    ]
    _emit(payload, as_json, lines)


@app.command()
def canonicalize(
    source: SourceArg,
    model: ModelOpt = None,
    kind: AsOpt = "auto",
    keep_volatile: Annotated[
        bool, typer.Option("--keep-volatile", help="Leave timestamps and ids in place.")
    ] = False,
    as_json: JsonOpt = False,
    max_bytes: MaxBytesOpt = None,
) -> None:
    """Print the canonical form of a text or chat request; the report goes to stderr.

    The report gives what was masked, token counts and the static-prefix fingerprint
    (with --json, everything is one object on stdout).
    """
    text = _read_source(source, max_bytes)
    if _input_kind(text, kind) == "text":
        counter = get_token_counter(model)
        canonical = canonicalize_text(text)
        masked = mask_volatile(canonical) if not keep_volatile else None
        output = masked.text if masked else canonical
        moved = [m.__dict__ for m in masked.masked] if masked else []
        payload: dict[str, Any] = {
            "kind": "text",
            "canonical": output,
            "masked": moved,
            "fingerprint": fingerprint(output),
            "tokens_before": counter(text),
            "tokens_after": counter(output),
        }
    else:
        request = parse_chat_request(text)
        plan = PromptPlan.from_request(
            request,
            model=model or request.get("model"),
            volatile="keep" if keep_volatile else "move",
        )
        rendered = plan.render()
        body: dict[str, Any] = {"messages": rendered.messages}
        if request.get("model") or model:
            body = {"model": model or request["model"], **body}
        if rendered.tools:
            body["tools"] = rendered.tools
        before = count_request_tokens(request, counter=get_token_counter(plan.model)).total
        output = canonical_json(body)
        payload = {
            "kind": "request",
            "canonical": body,
            "masked": [m.__dict__ for m in rendered.moved],
            "fingerprint": rendered.static_prefix_fingerprint,
            "static_prefix_tokens": rendered.static_prefix_tokens,
            "tokens_before": before,
            "tokens_after": rendered.total_tokens,
        }
    if as_json:
        typer.echo(json.dumps(payload, ensure_ascii=False, indent=2))
        return
    typer.echo(output)
    report = [
        f"static-prefix fingerprint: {payload['fingerprint']}",
        f"tokens: {payload['tokens_before']} before, {payload['tokens_after']} after",
    ]
    if "static_prefix_tokens" in payload:
        report.append(f"static prefix: {payload['static_prefix_tokens']} tokens")
    report += [f"masked {m['kind']}: {m['value']} -> {m['placeholder']}" for m in payload["masked"]]
    for line in report:
        typer.echo(line, err=True)


@app.command()
def demo(
    seed: Annotated[int, typer.Option(help="Seed of the generated prompt sample.")] = 7,
    as_json: JsonOpt = False,
) -> None:
    """The main job: canonicalization and prefix caching on a generated prompt sample."""
    from tokenlean.cli._demo import run_demo

    run_demo(seed=seed, as_json=as_json)


@bench_app.command("tokens")
def bench_tokens(
    reps: Annotated[int, typer.Option(help="Timed repetitions per measurement.")] = 200,
    target_tokens: Annotated[int, typer.Option(help="Size of the prompt counted.")] = 2000,
    as_json: JsonOpt = False,
) -> None:
    """Token counting speed: tiktoken itself, tokenlean uncached, and cache hits."""
    from tokenlean.cli._bench import run_token_bench

    run_token_bench(reps=reps, target_tokens=target_tokens, as_json=as_json)


@bench_app.command("cache")
def bench_cache(
    pairs: Annotated[
        Path | None, typer.Option("--pairs", help="File of labelled text pairs.")
    ] = None,
    stream: Annotated[
        Path | None,
        typer.Option("--stream", help='JSONL stream of {"text", "answer"} prompts, in order.'),
    ] = None,
    fmt: Annotated[
        str, typer.Option("--format", help="gptcache, mrpc-tsv, stsb-tsv or pairs-jsonl.")
    ] = "mrpc-tsv",
    max_error_rate: Annotated[
        float, typer.Option(help="Error budget of the error-bounded semantic policy.")
    ] = 0.05,
    limit: Annotated[int | None, typer.Option(help="Use the first N pairs or prompts.")] = None,
    threshold: Annotated[
        float | None,
        typer.Option(help="Pairs: a static threshold instead of the error-bounded policy."),
    ] = None,
    sweep: Annotated[bool, typer.Option(help="Print the precision / hit-rate curve.")] = False,
    scale: Annotated[
        int, typer.Option(help="Also time lookups with this many entries in one partition.")
    ] = 0,
    verifier: Annotated[
        str, typer.Option(help="With --threshold: default, light or off.")
    ] = "default",
    seed: Annotated[int, typer.Option(help="Seed of the exploration draws.")] = 0,
    as_json: JsonOpt = False,
) -> None:
    """Semantic-cache error rate, hit rate and latency: on a stream (--stream) or on labelled
    pairs (--pairs), against plain cosine thresholds."""
    if (pairs is None) == (stream is None):
        raise ConfigurationError("give exactly one of --pairs FILE or --stream FILE")
    if stream is not None:
        from tokenlean.cli._bench_cache_stream import print_stream_report, stream_bench

        result = stream_bench(stream, max_error_rate=max_error_rate, limit=limit, seed=seed)
        if as_json:
            typer.echo(json.dumps(result, indent=2))
        else:
            print_stream_report(result)
        return
    from tokenlean.cli._bench_cache import cache_bench, print_report

    assert pairs is not None
    result = cache_bench(
        pairs, fmt, limit=limit, threshold=threshold, sweep=sweep, scale=scale, verifier=verifier,
        max_error_rate=max_error_rate,
    )  # fmt: skip
    if as_json:
        typer.echo(json.dumps(result, indent=2))
    else:
        print_report(result)


@bench_app.command("retrieval")
def bench_retrieval(
    beir: Annotated[Path, typer.Option("--beir", help="BEIR-layout folder.")],
    split: Annotated[str, typer.Option(help="qrels split: train or test.")] = "train",
    budget: Annotated[int, typer.Option(help="Token budget of the packed context.")] = 1000,
    limit: Annotated[int | None, typer.Option(help="Use the first N queries.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """nDCG@10, recall@10 and recall within a token budget, against BM25 and dense alone."""
    from tokenlean.cli._bench_retrieval import print_report, retrieval_bench

    result = retrieval_bench(beir, split, budget=budget, limit=limit)
    if as_json:
        typer.echo(json.dumps(result, indent=2))
    else:
        print_report(result)


@bench_app.command("memory")
def bench_memory(
    files: Annotated[list[Path], typer.Argument(help="LoCoMo conversation files.")],
    dataset: Annotated[str, typer.Option(help="Data format (locomo).")] = "locomo",
    budget: Annotated[int, typer.Option(help="Token budget of each assembled context.")] = 2000,
    limit: Annotated[int | None, typer.Option(help="First N questions per file.")] = None,
    latency_turns: Annotated[
        int, typer.Option(help="Also time assembly on a conversation of this many turns.")
    ] = 0,
    as_json: JsonOpt = False,
) -> None:
    """Evidence recall of assembled contexts against the full transcript, a recent window and
    dense top turns."""
    from tokenlean.cli._bench_memory import memory_bench, print_report

    if dataset != "locomo":
        raise ConfigurationError(f"--dataset must be locomo, not {dataset!r}")
    result = memory_bench(files, budget=budget, limit=limit, latency_turns=latency_turns)
    if as_json:
        typer.echo(json.dumps(result, indent=2))
    else:
        print_report(result, typer.echo)


@bench_app.command("batching")
def bench_batching(
    callers: Annotated[int, typer.Option(help="Concurrent embedding callers.")] = 32,
    per_caller: Annotated[int, typer.Option(help="Texts each caller embeds.")] = 8,
    as_json: JsonOpt = False,
) -> None:
    """Micro-batched versus one-call-each: embeddings, and a simulated chat API."""
    from tokenlean.cli._bench_batching import batching_bench

    result = batching_bench(callers=callers, per_caller=per_caller)
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    e = result["embedding"]
    b, u = e["batched"], e["unbatched"]
    typer.echo(
        f"embeddings, {e['callers']} callers: {e['throughput_ratio']}x throughput "
        f"({b['items_per_s']} vs {u['items_per_s']} items/s), "
        f"p95 {b['latency_ms_p95']} vs {u['latency_ms_p95']} ms"
    )
    for r in result["simulated_api"]["rates"]:
        b, u = r["batched"], r["unbatched"]
        typer.echo(
            f"simulated API at {r['arrival_rate_per_s']}/s: {r['throughput_ratio']}x, p95 "
            f"{b['latency_ms_p95']} vs {u['latency_ms_p95']} ms, "
            f"fill {r['batch_fill_rate']}, queue p95 {r['queue_delay_ms_p95']} ms"
        )


@bench_app.command("routing")
def bench_routing(as_json: JsonOpt = False) -> None:
    """Cost and accuracy of routing versus always-small and always-large."""
    from tokenlean.cli._bench_batching import routing_bench

    result = routing_bench()
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    for name in ("always_small", "always_large", "routed"):
        r = result[name]
        typer.echo(
            f"{name:13} accuracy {r['accuracy']:.3f}  cost/request {r['cost_per_request']}  "
            f"cost/success {r['cost_per_success']}"
        )


@bench_app.command("overhead")
def bench_overhead(
    reps: Annotated[int, typer.Option(help="Timed recordings.")] = 20_000,
    as_json: JsonOpt = False,
) -> None:
    """The cost of recording one request into the metrics collector."""
    from tokenlean.cli._bench_overhead import overhead_bench

    result = overhead_bench(reps)
    if as_json:
        typer.echo(json.dumps(result, indent=2))
    else:
        typer.echo(
            f"record one request: {result['record_us_p50']} us (median of {reps}); "
            f"with OpenTelemetry: {result['record_with_otel_us_p50']} us"
        )


@app.command()
def audit(
    log: Annotated[Path, typer.Argument(help="JSONL request log (see docs/audit.md).")],
    near_duplicates: Annotated[
        float | None, typer.Option(help="Also count near-duplicate user turns at this cosine.")
    ] = None,
    html_report: Annotated[
        Path | None, typer.Option("--html", help="Write an HTML report here.")
    ] = None,
    generate: Annotated[
        int, typer.Option(help="Write a generated sample log of N requests to LOG first.")
    ] = 0,
    as_json: JsonOpt = False,
) -> None:
    """Where the tokens of a request log go, and what each lever would save."""
    from tokenlean._audit import audit_log, read_request_log
    from tokenlean.cli._audit import render_html, write_sample_log

    if generate:
        write_sample_log(log, generate)
    if not log.is_file():
        raise ConfigurationError(f"no such file: {log}")
    report = audit_log(read_request_log(log), near_duplicates=near_duplicates).to_json()
    if html_report is not None:
        html_report.write_text(render_html(report), encoding="utf-8")
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    typer.echo(
        f"{report['requests']} requests, {report['input_tokens']:,} input tokens; "
        f"{report['history_share']:.0%} of them old history; "
        f"{report['exact_duplicates']['requests']} exact duplicates"
    )
    for lever, tokens in report["savings_tokens"].items():
        usd = report["savings_usd"].get(lever, 0.0)
        typer.echo(f"  {lever:20} {tokens:>12,} tokens  ${usd:,.4f}")
    for route, figures in report["routes"].items():
        typer.echo(
            f"  route {route}: {figures['distinct_raw_prefixes']} raw static prefixes, "
            f"{figures['distinct_static_prefixes']} once canonical, top one "
            f"{figures['top_prefix_share']:.0%} of requests, {figures['top_prefix_tokens']} tokens "
            f"(provider minimum {figures['provider_min_tokens']})"
        )


RouteOpt = Annotated[
    str | None, typer.Option(help="The cache route (default: the cache's default policy).")
]
BudgetOpt = Annotated[float, typer.Option(help="The route's max_error_rate.")]
VersionOpt = Annotated[str, typer.Option(help="The route policy's version.")]


@cache_app.command("calibrate")
def cache_calibrate(
    data: Annotated[Path, typer.Argument(help="Labelled pairs, or a JSONL stream.")],
    store: Annotated[Path, typer.Option(help="SQLite cache store to write the evidence to.")],
    fmt: Annotated[
        str, typer.Option("--format", help="stream, gptcache, mrpc-tsv, stsb-tsv or pairs-jsonl.")
    ] = "stream",
    route: RouteOpt = None,
    max_error_rate: BudgetOpt = 0.05,
    version: VersionOpt = "1",
    limit: Annotated[int | None, typer.Option(help="Use the first N pairs or prompts.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Add offline evidence to a semantic route's error-bounded acceptance rule."""
    from tokenlean.cli._cache_cmd import calibrate_store

    result = calibrate_store(
        data, store, fmt=fmt, route=route, max_error_rate=max_error_rate, version=version,
        limit=limit,
    )  # fmt: skip
    _print_acceptance(result, as_json)


@cache_app.command("acceptance")
def cache_acceptance(
    store: Annotated[Path, typer.Argument(help="SQLite cache store.")],
    route: RouteOpt = None,
    max_error_rate: BudgetOpt = 0.05,
    version: VersionOpt = "1",
    as_json: JsonOpt = False,
) -> None:
    """Show a semantic route's evidence, error bound and acceptance region."""
    from tokenlean.cli._cache_cmd import show_acceptance

    result = show_acceptance(store, route=route, max_error_rate=max_error_rate, version=version)
    _print_acceptance(result, as_json)


def _print_acceptance(result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    for key, value in result.items():
        typer.echo(f"{key:>20}: {value}")


def _version(value: bool) -> None:
    if value:
        from tokenlean import __version__

        typer.echo(f"tokenlean {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
    verbose: Annotated[
        bool,
        typer.Option(
            "--verbose", "-v", help="Log what tokenlean falls back to (tokenizers, models)."
        ),
    ] = False,
) -> None:
    """Spend fewer LLM tokens for the same answers."""
    if verbose:
        import logging

        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logging.getLogger("tokenlean").addHandler(handler)
        logging.getLogger("tokenlean").setLevel(logging.INFO)


def _usage_error(exc: Exception) -> int | None:
    """Print a command-line usage error (an unknown option, a missing argument…) as one line
    and return its exit status; None when ``exc`` is not one. Typer bundles its own copy of
    click, so the error is recognized by its shape rather than by click's classes."""
    message = getattr(exc, "format_message", None)
    code = getattr(exc, "exit_code", None)
    if not callable(message) or not isinstance(code, int):
        return None
    if type(exc).__name__ == "NoArgsIsHelpError":  # a bare command: its help, as asked
        ctx = getattr(exc, "ctx", None)
        typer.echo(ctx.get_help() if ctx is not None else message())
        return 0
    ctx = getattr(exc, "ctx", None)
    where = f" (try '{ctx.command_path} --help')" if ctx is not None else ""
    typer.echo(f"tokenlean: error: {message()}{where}", err=True)
    return 2 if code in (1, 2) else code


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``tokenlean`` command; typed errors and usage errors exit 2 with a
    one-line message."""
    try:
        app(args=argv, standalone_mode=False)
    except TokenleanError as exc:
        typer.echo(f"tokenlean: error: {exc}", err=True)
        sys.exit(2)
    except (typer.Exit, SystemExit) as exc:
        code = exc.exit_code if isinstance(exc, typer.Exit) else exc.code
        sys.exit(code)
    except typer.Abort:
        sys.exit(130)
    except Exception as exc:
        status = _usage_error(exc)
        if status is None:
            raise
        sys.exit(status)
