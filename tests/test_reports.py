"""The benchmark's reports read well: the HTML page's charts never clip a label or a figure,
its table formats costs, tokens and failures, and the terminal table never cuts a figure."""

from __future__ import annotations

import io
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from tokenlean.bench._report import write_report
from tokenlean.cli._harness_view import print_table

CHAR_WIDTH_EM = 0.6  # a sans-serif character, on average, is narrower than this


def variant(tokens: float, cost: float | None, failures: dict[str, int]) -> dict[str, Any]:
    return {
        "tasks": 120, "success_rate": 0.9583, "input_tokens_per_task": tokens,
        "output_tokens_per_task": 10.0, "cost_per_success": cost, "latency_ms_p50": 1234.56,
        "latency_ms_p95": 98765.4, "latency_ms_p99": 123456.7, "cache_hit_rate": 0.125,
        "failures": failures, "latency_ms_percentiles": [5.0, 400.0, 98765.4],
    }  # fmt: skip


@pytest.fixture
def result() -> dict[str, Any]:
    """Figures with long names and large values: the cases that clipped."""
    return {
        "questions": 1200,
        "variants": {
            "baseline": variant(1_234_567.891, 0.0123456, {}),
            "summarized_retrieved": variant(2541.2, 0.000387, {"wrong_fact": 3}),
            "a_much_longer_custom_variant_name": variant(987_654.3, 12.5, {"stale": 1,
                                                                           "wrong_fact": 7}),
            "all_levers": variant(2532.2, None, {}),
        },
    }  # fmt: skip


def test_no_chart_text_is_clipped(tmp_path: Path, result: dict[str, Any]) -> None:
    """Every text element of every SVG chart fits within the chart's width, by a generous
    estimate of its rendered width."""
    page = write_report(result, tmp_path).read_text(encoding="utf-8")
    charts = re.findall(r"<svg .*?</svg>", page, flags=re.DOTALL)
    assert len(charts) == 5
    checked = 0
    for chart in charts:
        svg = ET.fromstring(chart)
        width = float(svg.attrib["width"])
        for text in svg.iter("{http://www.w3.org/2000/svg}text"):
            x = float(text.attrib["x"])
            size = float(text.attrib["font-size"])
            extent = x + len(text.text or "") * size * CHAR_WIDTH_EM
            assert x >= 0
            assert extent <= width, f"{text.text!r} ends at {extent:.0f} of {width:.0f}"
            checked += 1
    assert checked > 20
    assert "a_much_longer_custom_variant_name" in page
    assert "1,234,568 tokens" in page  # whole tokens, with separators
    assert "$12.50" in page
    assert "98,765 ms" in page


def test_the_table_formats_costs_tokens_and_failures(
    tmp_path: Path, result: dict[str, Any]
) -> None:
    """Costs in dollars, tokens and milliseconds without decimals, failures as a list, and
    "none" instead of an empty ``{}``."""
    page = write_report(result, tmp_path).read_text(encoding="utf-8")
    table = page.split("<table>")[1].split("</table>")[0]
    rows = [re.findall(r"<td[^>]*>(.*?)</td>", row) for row in table.split("<tr>")[2:]]
    assert len(rows) == 4
    assert "{}" not in table
    by_name = {row[0]: row for row in rows}
    assert by_name["baseline"][1:4] == ["95.8%", "1,234,568", "$0.012346"]
    assert by_name["baseline"][-1] == "none"
    assert by_name["a_much_longer_custom_variant_name"][-1] == "wrong_fact 7, stale 1"
    assert by_name["all_levers"][3] == "-"  # no success, no cost per success
    for row in rows:
        assert row[3] == "-" or row[3].startswith("$")
        assert all(re.fullmatch(r"[\d,]+", cell) for cell in row[4:7])  # latencies, in ms


@pytest.mark.parametrize("width", [80, 100, 120, 160])
def test_the_terminal_table_never_cuts_a_figure(result: dict[str, Any], width: int) -> None:
    """At any usual terminal width every figure is printed whole (two tables when one does
    not fit; the failures column may wrap between items), and no line is wider than the
    terminal."""
    buffer = io.StringIO()
    print_table(result, Console(file=buffer, width=width, force_terminal=False))
    out = buffer.getvalue()
    assert "…" not in out
    assert all(len(line) <= width for line in out.splitlines())
    for text in ("a_much_longer_custom_variant_name", "1,234,568", "$0.012346", "$12.50",
                 "123,457", "wrong_fact 7,", "stale 1", "95.8%", "none"):  # fmt: skip
        assert text in out, (width, text)
