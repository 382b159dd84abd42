"""The harness in the terminal: progress bars during the run (on stderr) and a results table."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

__all__ = ["print_table", "progress_bars"]


@contextmanager
def progress_bars(variants: Sequence[str]) -> Iterator[Callable[[str, int, int], None]]:
    """One bar per variant on stderr (stdout stays clean for ``--json``); yields the callback
    ``run_harness`` takes as ``progress``. Without a terminal, rich prints nothing until the end."""
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
        tasks = {name: bars.add_task(name, total=None) for name in variants}

        def advance(variant: str, done: int, total: int) -> None:
            bars.update(tasks[variant], completed=done, total=total)

        yield advance


def print_table(result: dict[str, Any], console: Console | None = None) -> None:
    """The variants side by side, with the change of each against the baseline."""
    if console is None:
        console = Console()
        if not console.is_terminal:  # a pipe or a file: room for every column
            console = Console(width=150)
    variants = result["variants"]
    base = variants.get("baseline")
    table = Table(title=f"tokenlean bench: {result['questions']} questions (simulated model)")
    for column in ("variant", "success", "input tok/task", "vs baseline", "cost/success",
                   "p50 ms", "p95 ms", "p99 ms", "cache hits", "failures"):  # fmt: skip
        table.add_column(column, justify="left" if column in ("variant", "failures") else "right")
    for name, v in variants.items():
        change = v["input_tokens_per_task"] / base["input_tokens_per_task"] - 1 if base else 0.0
        failures = ", ".join(f"{k} {n}" for k, n in v["failures"].items()) or "-"
        cost = v["cost_per_success"]
        table.add_row(
            name,
            f"{v['success_rate']:.3f}",
            f"{v['input_tokens_per_task']:,.0f}",
            f"{change:+.1%}" if base else "-",
            f"${cost:.6f}" if cost is not None else "-",
            f"{v['latency_ms_p50']:,.0f}",
            f"{v['latency_ms_p95']:,.0f}",
            f"{v['latency_ms_p99']:,.0f}",
            f"{v['cache_hit_rate']:.2f}",
            failures,
        )
    console.print(table)
    levers = variants.get("all_levers", {})
    if "batching" in levers and "routing" in levers:
        batching, routing = levers["batching"], levers["routing"]
        console.print(
            f"all_levers: {batching['batches']} batches of {batching['mean_batch_size']} requests "
            f"on average; small model {routing['small_share']:.0%}, escalated "
            f"{routing['escalation_rate']:.0%}; provider prefix cache "
            f"{levers['prefix_cached_share']:.0%} of input tokens"
        )
