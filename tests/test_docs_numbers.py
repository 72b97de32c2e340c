"""Measured numbers in the docs come from bench/results/: the placeholder renderer, the README's headline block,
and every speed-up the README states."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from scripts.docs_numbers import (
    CODE,
    PLACEHOLDER,
    README,
    README_TEMPLATE,
    RESULTS_DIR,
    MissingNumber,
    Results,
    lookup,
    readme_with_headline,
    render,
    render_page,
)

REPO = Path(__file__).resolve().parents[1]

FIXTURE = {
    "date": "2026-01-02 03:04:05",
    "machine": {"cpu": "Test CPU", "cpu_count": 4, "torch_threads": 1, "load_average": [0.5, 0.4, 0.3]},
    "ratios": {"b1: pearson": {"compact speed-up vs teacher": 3.730830933149546}},
    "median_s": {"cli_wall": 12.142},
    "rows": [{"runtime": "torch", "batch": 1, "images_per_s": 41.13}, {"runtime": "onnx", "batch": 1, "images_per_s": 79.16}],
    "targets": {"speed-up": {"value": 3.73, "target": 4.0, "met": False}, "time": {"value": 12.1, "target": 15.0, "met": True}},
}


@pytest.fixture
def results(tmp_path: Path) -> Results:
    (tmp_path / "fixture.json").write_text(json.dumps(FIXTURE))
    return Results(tmp_path)


def test_a_placeholder_renders_its_value_exactly(results):
    text = ('{{ bench fixture ratios."b1: pearson"."compact speed-up vs teacher" :.2f }}× and '
            "{{ bench fixture median_s.cli_wall *1000 :,.0f }} ms, {{ bench fixture rows[runtime=onnx, batch=1].images_per_s }}; "
            "target {{ bench-met fixture targets.speed-up }}, {{ bench-met fixture targets.time }}")
    assert render(text, results) == "3.73× and 12,142 ms, 79.16; target **not met**, met"
    assert render("{{ bench-source fixture }}", results) == \
        f"measured on Test CPU, 4 cores, 1 torch thread, load 0.5, 2026-01-02 (`{results.display('fixture')}`)"


def test_code_shows_placeholders_as_written(results):
    text = "`{{ bench fixture median_s.cli_wall }}`\n```\n{{ bench nothing here }}\n```\n{{ bench fixture median_s.cli_wall }}"
    assert render(text, results) == "`{{ bench fixture median_s.cli_wall }}`\n```\n{{ bench nothing here }}\n```\n12.142"


@pytest.mark.parametrize("placeholder", [
    "{{ bench fixture median_s.no_such_key }}",
    "{{ bench no-such-file median_s.cli_wall }}",
    "{{ bench fixture rows[runtime=tpu].images_per_s }}",
    "{{ bench fixture rows[batch=1].images_per_s }}",  # two rows match: ambiguous
    "{{ bench fixture median_s }}",  # not a number
    "{{ bench-met fixture median_s.cli_wall }}",  # not a target record
    "{{ bench fixture median_s.cli_wall :.2q }}",
    "{{ bench-typo fixture median_s.cli_wall }}",
])
def test_a_missing_file_key_or_element_raises(results, placeholder):
    with pytest.raises(MissingNumber):
        render(placeholder, results)


def test_a_page_ends_with_the_provenance_of_each_file_it_read(results, tmp_path):
    page = render_page("x {{ bench fixture median_s.cli_wall :.1f }} y", tmp_path)
    assert page.startswith("x 12.1 y")
    assert "measured on Test CPU" in page and "fixture.json" in page
    assert render_page("no numbers here", tmp_path) == "no numbers here"


def test_every_docs_page_renders():
    """A placeholder naming a missing file or key in docs/ fails here as it fails `make docs`."""
    for page in sorted((REPO / "docs").glob("*.md")):
        prose = CODE.sub("", render_page(page.read_text()))
        assert not PLACEHOLDER.search(prose), page.name


def test_the_committed_readme_is_what_bench_results_give():
    current = README.read_text()
    assert readme_with_headline(current, README_TEMPLATE.read_text()) == current, \
        "README.md's headline numbers differ from bench/results/: run `make readme` and commit it"


def _numbers(value: object):
    if isinstance(value, bool):
        return
    if isinstance(value, (int, float)):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _numbers(item)
    elif isinstance(value, list):
        for item in value:
            yield from _numbers(item)


def test_every_speed_up_in_the_readme_is_a_value_of_bench_results():
    """The issue's acceptance criterion: every `N×` figure in README.md equals a value in bench/results/*.json to
    the precision shown."""
    values = [number for path in RESULTS_DIR.glob("*.json") for number in _numbers(json.loads(path.read_text()))]
    figures = re.findall(r"(?<![\d.×])(\d+(?:\.(\d+))?)×(?!\d)", README.read_text())
    assert figures, "README.md states no speed-up"
    for figure, decimals in figures:
        assert any(f"{value:.{len(decimals)}f}" == figure for value in values), f"{figure}× is in no bench/results/*.json"


def test_lookup_reads_lists_by_index_and_quoted_keys():
    assert lookup(FIXTURE, "rows.1.runtime") == "onnx"
    assert lookup(FIXTURE, 'ratios."b1: pearson"') == FIXTURE["ratios"]["b1: pearson"]


def test_bench_checkpoints_still_writes_what_the_docs_read(tmp_path):
    """The smoke run (headers of every shipped checkpoint, the ood test share of the first) has every key of the
    committed checkpoints.json, and the same recorded metrics."""
    from bench import run_benchmark

    result, _ = run_benchmark("checkpoints", smoke=True, out=tmp_path)
    committed = json.loads((RESULTS_DIR / "checkpoints.json").read_text())["checkpoints"]
    assert result["checkpoints"].keys() == committed.keys()
    measured_here = {"n_test", "test_in_distribution", "median_test_score"}  # smoke scores the first checkpoint only
    for name, record in committed.items():
        fresh = result["checkpoints"][name]
        assert set(fresh) == set(record), name
        assert set(record.get("ood", {})) - measured_here <= set(fresh.get("ood", {})), name
        assert (fresh["test_accuracy"], fresh["params"], fresh["macs"]) == \
            (record["test_accuracy"], record["params"], record["macs"]), name
    first = next(iter(result["checkpoints"].values()))
    assert 0 <= first["ood"]["test_in_distribution"] <= 1 and first["ood"]["n_test"] == 16
