"""The harness in the terminal: progress bars during the run (on stderr) and a results table."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from rich import box
from rich.console import Console
from rich.measure import Measurement
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from tokenlean.bench._report import format_cost, format_failures

__all__ = ["print_table", "progress_bars"]


@contextmanager
def progress_bars(
    variants: Sequence[str], total: int | None = None
) -> Iterator[Callable[[str, int, int], None]]:
    """One bar per variant on stderr (stdout stays clean for ``--json``), each out of ``total``
    questions from the start; yields the callback ``run_harness`` takes as ``progress``.
    Without a terminal, rich prints nothing."""
    console = Console(stderr=True)
    with Progress(
        TextColumn("{task.description:22}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=not console.is_terminal,
        disable=not console.is_terminal,
    ) as bars:
        tasks = {name: bars.add_task(name, total=total) for name in variants}

        def advance(variant: str, done: int, total: int) -> None:
            bars.update(tasks[variant], completed=done, total=total)

        yield advance


_COLUMNS = {  # header: (justify, part); part 0 is tokens and cost, 1 is latency and failures
    "variant": ("left", None),
    "success": ("right", 0),
    "input\ntok/task": ("right", 0),
    "vs\nbaseline": ("right", 0),
    "cost/\nsuccess": ("right", 0),
    "cache\nhits": ("right", 0),
    "p50\nms": ("right", 1),
    "p95\nms": ("right", 1),
    "p99\nms": ("right", 1),
    "failures": ("left", 1),
}


def _rows(result: dict[str, Any]) -> list[dict[str, str]]:
    variants = result["variants"]
    base = variants.get("baseline")
    rows = []
    for name, v in variants.items():
        change = v["input_tokens_per_task"] / base["input_tokens_per_task"] - 1 if base else None
        rows.append(
            {
                "variant": name,
                "success": f"{v['success_rate']:.1%}",
                "input\ntok/task": f"{v['input_tokens_per_task']:,.0f}",
                "vs\nbaseline": f"{change:+.1%}" if change is not None else "-",
                "cost/\nsuccess": format_cost(v["cost_per_success"]),
                "cache\nhits": f"{v['cache_hit_rate']:.0%}",
                "p50\nms": f"{v['latency_ms_p50']:,.0f}",
                "p95\nms": f"{v['latency_ms_p95']:,.0f}",
                "p99\nms": f"{v['latency_ms_p99']:,.0f}",
                "failures": format_failures(v["failures"]),
            }
        )
    return rows


def _table(title: str, rows: list[dict[str, str]], columns: list[str]) -> Table:
    table = Table(
        title=title,
        box=box.SIMPLE_HEAD,
        padding=(0, 1),
        pad_edge=False,
        show_edge=False,
        title_justify="left",
    )
    for column in columns:
        justify, _ = _COLUMNS[column]
        if column == "failures":  # free text: wraps at commas rather than being cut
            table.add_column(column, justify="left", overflow="fold", min_width=8)
        else:  # figures and names are never cut: the column is as wide as its widest cell
            header = max(len(line) for line in column.splitlines())
            widest = max(header, *(len(row[column]) for row in rows))
            table.add_column(column, justify=justify, no_wrap=True, min_width=widest)  # type: ignore[arg-type]
    for row in rows:
        table.add_row(*(row[column] for column in columns))
    return table


def print_table(result: dict[str, Any], console: Console | None = None) -> None:
    """The variants side by side, with the change of each against the baseline. The figures
    are never cut: when the terminal is too narrow for one table, they come as two (tokens and
    cost, then latency and failures)."""
    if console is None:
        console = Console()
        if not console.is_terminal:  # a pipe or a file: room for every column
            console = Console(width=150)
    rows = _rows(result)
    title = f"tokenlean bench: {result['questions']:,} questions (simulated model)"
    whole = _table(title, rows, list(_COLUMNS))
    unbounded = console.options.update_width(10_000)
    if Measurement.get(console, unbounded, whole).maximum <= console.width:
        console.print(whole)
    else:
        console.print(title)
        for part, heading in ((0, "tokens and cost"), (1, "latency and failures")):
            columns = ["variant", *(c for c, (_, p) in _COLUMNS.items() if p == part)]
            console.print()
            console.print(_table(heading, rows, columns))
    levers = result["variants"].get("all_levers", {})
    if "batching" in levers and "routing" in levers:
        batching, routing = levers["batching"], levers["routing"]
        console.print(
            f"all_levers: {batching['batches']:,} batches of {batching['mean_batch_size']} "
            f"requests on average; small model {routing['small_share']:.0%}, escalated "
            f"{routing['escalation_rate']:.0%}; provider prefix cache "
            f"{levers['prefix_cached_share']:.0%} of input tokens"
        )
