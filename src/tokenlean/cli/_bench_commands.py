"""``tokenlean bench``: the end-to-end harness and the component benchmarks."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer

from tokenlean._errors import ConfigurationError
from tokenlean.cli._app import JsonOpt, bench_app


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
    from tokenlean.bench import VARIANTS, generate_workload, run_harness
    from tokenlean.bench._report import write_report

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

    names = [v.name for v in VARIANTS]
    chosen = [name for name in names if name in (variant or names)]
    if variant and len(chosen) < len(set(variant)):
        raise ConfigurationError(f"unknown variant in {variant}; known: {names}")
    if reports.exists() and not reports.is_dir():
        raise ConfigurationError(f"--reports {reports} is a file, not a folder")
    # Loading the model and building the workload take a while before the first bar moves.
    typer.echo("tokenlean bench: loading the embedding model…", err=True)
    embedder = default_embedder()
    _ = embedder.dimension  # loads the model now, not inside the first variant
    typer.echo(f"tokenlean bench: building the workload ({users} users, seed {seed})…", err=True)
    workload = generate_workload(users=users, seed=seed)
    typer.echo(
        f"tokenlean bench: running {', '.join(chosen)} on {workload.questions} questions…",
        err=True,
    )
    with progress_bars(chosen, total=workload.questions) as progress:
        result = run_harness(
            workload, embedder=embedder, model_factory=factory, progress=progress,
            variants=chosen,
        )  # fmt: skip
    try:
        page = write_report(result, reports)
    except OSError as exc:
        raise ConfigurationError(f"cannot write the report into {reports}: {exc.strerror}") from exc
    typer.echo(f"report: {page}", err=True)
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    print_table(result)


@bench_app.command("tokens")
def bench_tokens(
    reps: Annotated[int, typer.Option(help="Timed repetitions per measurement.")] = 200,
    target_tokens: Annotated[int, typer.Option(help="Size of the prompt counted.")] = 2000,
    as_json: JsonOpt = False,
) -> None:
    """Token counting speed: tiktoken itself, tokenlean uncached, and cache hits."""
    from tokenlean.bench._tokens import run_token_bench

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
    limit: Annotated[
        int | None, typer.Option(min=1, help="Use the first N pairs or prompts.")
    ] = None,
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
        from tokenlean.bench._cache_stream import print_stream_report, stream_bench

        result = stream_bench(stream, max_error_rate=max_error_rate, limit=limit, seed=seed)
        if as_json:
            typer.echo(json.dumps(result, indent=2))
        else:
            print_stream_report(result)
        return
    from tokenlean.bench._cache_pairs import cache_bench, print_report

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
    limit: Annotated[int | None, typer.Option(min=1, help="Use the first N queries.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """nDCG@10, recall@10 and recall within a token budget, against BM25 and dense alone."""
    from tokenlean.bench._retrieval import print_report, retrieval_bench

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
    limit: Annotated[int | None, typer.Option(min=1, help="First N questions per file.")] = None,
    latency_turns: Annotated[
        list[int] | None,
        typer.Option(
            help="Also time add() and assembly at this many turns; repeat for several sizes."
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Evidence recall of assembled contexts against the full transcript, a recent window and
    dense top turns."""
    from tokenlean.bench._memory import memory_bench, print_report

    if dataset != "locomo":
        raise ConfigurationError(f"--dataset must be locomo, not {dataset!r}")
    result = memory_bench(files, budget=budget, limit=limit, latency_turns=latency_turns or [])
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
    from tokenlean.bench._batching import batching_bench

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
    from tokenlean.bench._batching import routing_bench

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
    from tokenlean.bench._overhead import overhead_bench

    result = overhead_bench(reps)
    if as_json:
        typer.echo(json.dumps(result, indent=2))
    else:
        typer.echo(
            f"record one request: {result['record_us_p50']} us (median of {reps}); "
            f"with OpenTelemetry: {result['record_with_otel_us_p50']} us"
        )


@bench_app.command("replicas")
def bench_replicas(
    store: Annotated[
        list[str] | None,
        typer.Option(
            "--store",
            help="Store URI shared by the processes (repeatable; default: the local Redis and "
            "a SQLite file in the current folder).",
        ),
    ] = None,
    processes: Annotated[int, typer.Option(help="Processes sharing the store.")] = 4,
    seconds: Annotated[float, typer.Option(help="Seconds each process runs its mix.")] = 10.0,
    catch_up_entries: Annotated[
        int, typer.Option(help="Semantic entries a new replica catches up on.")
    ] = 100_000,
    max_entries: Annotated[
        int,
        typer.Option(
            help="The shared cache's entry bound (max_entries) for every process; below the "
            "entries the run stores, it shows whether the bound holds deployment-wide."
        ),
    ] = 2_000,
    join_turns: Annotated[
        int,
        typer.Option(
            help="Also time a replica joining a session of this many turns, with the stored "
            "turn vectors and without them (loads the bundled model; 0: skip)."
        ),
    ] = 0,
    as_json: JsonOpt = False,
) -> None:
    """Several processes sharing one store: throughput, visibility, lost updates, bounds, and
    a new replica's catch-up."""
    from tokenlean.bench._replicas import replicas_bench

    stores = store or ["redis://127.0.0.1:6379/0", "sqlite:///tokenlean-replicas.db"]
    result = replicas_bench(
        stores, processes=processes, seconds=seconds, catch_up_entries=catch_up_entries,
        max_entries=max_entries, join_turns=join_turns,
    )  # fmt: skip
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    for scheme, r in result.items():
        typer.echo(
            f"{scheme}: {r['lookups_per_s']} lookups/s, exact p50 {r['exact_ms_p50']} ms, "
            f"semantic p50 {r['semantic_ms_p50']} ms, visibility p50/p95 "
            f"{r['visibility_ms_p50']}/{r['visibility_ms_p95']} ms, lost updates "
            f"{r['lost_updates']}, errors {r['errors']}, over bound {r['entries_over_bound']} "
            f"(of {r['max_entries']}; {r['entries_stored_distinct']} stored), catch-up of "
            f"{r['catch_up_entries']} entries {r['catch_up_s']} s, semantic p50 then "
            f"{r['semantic_ms_p50_at_catch_up']} ms, on the interim index "
            f"{r['semantic_ms_p50_joining']} ms (recall@1 {r['interim_recall_at_1']}), on HNSW "
            f"{r['semantic_ms_p50_after_index_build']} ms"
        )
        if "session_join" in r:
            j = r["session_join"]
            typer.echo(
                f"{scheme}: a replica joining a {j['turns']}-turn session: first context "
                f"{j['join_context_ms']} ms with the stored turn vectors "
                f"({j['join_embedded_texts']} text embedded), {j['join_context_ms_embedding']} "
                f"ms embedding every turn ({j['join_embedded_texts_embedding']} texts)"
            )
