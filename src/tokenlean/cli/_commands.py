"""``tokenlean count``, ``canonicalize``, ``demo`` and ``audit``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from tokenlean._canonical import canonical_json, canonicalize_text, fingerprint
from tokenlean._errors import ConfigurationError
from tokenlean._input import parse_chat_request
from tokenlean._prompt.plan import PromptPlan
from tokenlean._prompt.volatile import mask_volatile
from tokenlean._tokens.counting import describe_counter, get_token_counter
from tokenlean._tokens.messages import count_request_tokens
from tokenlean.cli._app import (
    AsOpt,
    JsonOpt,
    MaxBytesOpt,
    ModelOpt,
    SourceArg,
    app,
    emit,
    input_kind,
    read_source,
)


@app.command()
def count(
    source: SourceArg,
    model: ModelOpt = None,
    kind: AsOpt = "auto",
    as_json: JsonOpt = False,
    max_bytes: MaxBytesOpt = None,
) -> None:
    """Count the tokens of a text, or of a JSON chat request (messages and tools)."""
    text = read_source(source, max_bytes)
    if input_kind(text, kind) == "text":
        counter = get_token_counter(model)
        name, approximate = describe_counter(counter)
        tokens = counter(text)
        emit(
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
    emit(payload, as_json, lines)


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
    text = read_source(source, max_bytes)
    if input_kind(text, kind) == "text":
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
    from tokenlean.bench._demo import run_demo

    run_demo(seed=seed, as_json=as_json)


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
    from tokenlean._audit.log_audit import audit_log, read_request_log
    from tokenlean.cli._audit import near_duplicates_line, render_html, write_sample_log

    if generate:
        write_sample_log(log, generate)
    if near_duplicates is not None and not 0 < near_duplicates <= 1:
        raise ConfigurationError(
            f"--near-duplicates takes a cosine in (0, 1], not {near_duplicates}"
        )
    if html_report is not None and html_report.is_dir():
        raise ConfigurationError(f"--html {html_report} is a folder; give a file name")
    report = audit_log(read_request_log(log), near_duplicates=near_duplicates).to_json()
    if html_report is not None:
        try:
            html_report.write_text(render_html(report), encoding="utf-8")
        except OSError as exc:
            raise ConfigurationError(f"cannot write {html_report}: {exc.strerror}") from exc
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
        minimum = figures["provider_min_tokens"]
        typer.echo(
            f"  route {route}: {figures['distinct_raw_prefixes']:,} raw static prefixes, "
            f"{figures['distinct_static_prefixes']:,} once canonical, top one "
            f"{figures['top_prefix_share']:.0%} of requests, {figures['top_prefix_tokens']:,} "
            f"tokens (provider minimum {f'{minimum:,}' if minimum is not None else 'none'})"
        )
    if near_duplicates is not None:
        typer.echo(f"  {near_duplicates_line(report['near_duplicates'])}")


@app.command()
def metrics(
    snapshot: Annotated[
        Path, typer.Argument(help="A metrics snapshot: MetricsCollector.snapshot() saved as JSON.")
    ],
    as_json: JsonOpt = False,
) -> None:
    """Show a saved metrics snapshot as a readable summary (headline figures, then totals)."""
    from tokenlean._errors import InvalidInputError
    from tokenlean._input import read_json_file
    from tokenlean._metrics.summary import render_summary

    data = read_json_file(snapshot)
    problem = f"{snapshot} is not a metrics snapshot (MetricsCollector.snapshot() saved as JSON)"
    if not isinstance(data, dict) or not isinstance(data.get("totals"), dict):
        raise InvalidInputError(problem)
    try:
        text = render_summary(data)
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        raise InvalidInputError(f"{problem}: a figure has the wrong type") from exc
    typer.echo(json.dumps(data, indent=2) if as_json else text)
