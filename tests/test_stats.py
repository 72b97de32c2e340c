"""Detector-comparison statistics against independent computations."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as sps

from core.stats import format_mean_std, mcnemar, mcnemar_report, mean_std, ttest

PUBLISHED = [[26830, 1142], [1290, 1643]]


def _exact_two_sided(b: int, c: int) -> float:
    """Two-sided binomial p-value by summing the smaller tail: 2 * sum_{k <= min} C(n, k) / 2^n."""
    n = b + c
    tail = sum(math.comb(n, k) for k in range(min(b, c) + 1))
    return min(1.0, 2 * tail / 2**n)


# ---------------------------------------------------------------------------- mcnemar


def test_chi_square_matches_formula():
    b, c = 30, 12
    statistic, p = mcnemar([[100, b], [c, 50]], exact=False)
    expected = (abs(b - c) - 1) ** 2 / (b + c)
    assert statistic == pytest.approx(expected)
    assert p == pytest.approx(sps.chi2.sf(expected, 1))


def test_published_example_is_significant():
    statistic, p = mcnemar(PUBLISHED)  # b + c = 2432: chi-square path
    assert statistic == pytest.approx(147**2 / 2432)
    assert statistic == pytest.approx(8.885, abs=1e-3)
    assert p == pytest.approx(sps.chi2.sf(147**2 / 2432, 1))
    assert p == pytest.approx(0.0029, abs=1e-4)
    assert p < 0.05


def test_exact_matches_binomial_sum():
    statistic, p = mcnemar([[40, 3], [9, 7]], exact=True)
    assert statistic == 3.0
    assert p == pytest.approx(2 * sum(math.comb(12, k) for k in range(4)) / 2**12)
    assert p == pytest.approx(598 / 4096)
    assert p == pytest.approx(_exact_two_sided(3, 9))


def test_exact_is_symmetric_in_b_and_c():
    assert mcnemar([[0, 9], [3, 0]], exact=True) == mcnemar([[0, 3], [9, 0]], exact=True)


def test_auto_switches_at_25_discordant():
    # b + c = 24: exact binomial
    statistic, p = mcnemar([[5, 10], [14, 5]])
    assert statistic == 10.0
    assert p == pytest.approx(_exact_two_sided(10, 14))
    # b + c = 25: chi-square
    statistic, p = mcnemar([[5, 10], [15, 5]])
    assert statistic == pytest.approx((5 - 1) ** 2 / 25)
    assert p == pytest.approx(sps.chi2.sf(16 / 25, 1))


def test_explicit_exact_overrides_threshold():
    table = [[0, 100], [130, 0]]
    assert mcnemar(table, exact=True)[1] == pytest.approx(_exact_two_sided(100, 130))
    statistic, _ = mcnemar([[0, 3], [9, 0]], exact=False)
    assert statistic == pytest.approx(5**2 / 12)


@pytest.mark.parametrize("exact", [None, True, False])
def test_no_discordant_pairs(exact):
    assert mcnemar([[50, 0], [0, 7]], exact=exact) == (0.0, 1.0)
    assert mcnemar([[0, 0], [0, 0]], exact=exact) == (0.0, 1.0)


def test_symmetric_tables():
    statistic, p = mcnemar([[10, 5], [5, 10]], exact=True)
    assert statistic == 5.0
    assert p == 1.0
    # Continuity-corrected numerator is (|0| - 1)^2 = 1: statistic 1 / (b + c), not 0.
    statistic, p = mcnemar([[10, 20], [20, 10]], exact=False)
    assert statistic == pytest.approx(1 / 40)
    assert p == pytest.approx(sps.chi2.sf(1 / 40, 1))
    assert 0.0 <= p <= 1.0


def test_float_integer_counts_are_accepted():
    assert mcnemar(np.array([[1.0, 3.0], [9.0, 2.0]])) == mcnemar([[1, 3], [9, 2]])


@pytest.mark.parametrize(
    "table",
    [
        [[1, -1], [2, 3]],  # negative
        [[1, 1.5], [2, 3]],  # non-integer
        [[1, 2, 3], [4, 5, 6], [7, 8, 9]],  # 3x3
        [1, 2, 3, 4],  # flat
        [[1, 2], [3]],  # ragged
        [[1, float("nan")], [2, 3]],  # NaN
        [[1, float("inf")], [2, 3]],  # inf
        [["a", "b"], ["c", "d"]],  # not numbers
    ],
)
def test_bad_tables_raise(table):
    with pytest.raises(ValueError):
        mcnemar(table)


def test_bad_exact_raises():
    with pytest.raises(ValueError, match="exact"):
        mcnemar([[1, 2], [3, 4]], exact="yes")


@settings(max_examples=200, derandomize=True, database=None, deadline=None)
@given(
    cells=st.lists(st.integers(min_value=0, max_value=400), min_size=4, max_size=4),
    exact=st.sampled_from([None, True, False]),
)
def test_property_p_in_range_and_swap_invariant(cells, exact):
    both, b, c, neither = cells
    statistic, p = mcnemar([[both, b], [c, neither]], exact=exact)
    swapped = mcnemar([[both, c], [b, neither]], exact=exact)
    assert 0.0 <= p <= 1.0
    assert statistic >= 0.0 and math.isfinite(statistic)
    assert swapped == pytest.approx((statistic, p))


# ---------------------------------------------------------------------------- mcnemar_report


def test_report_hand_counted_table():
    a = np.array([True, True, False, False, True, False, True])
    b = np.array([True, False, True, False, True, False, False])
    # both correct: 0, 4; A only: 1, 6; B only: 2; neither: 3, 5
    report = mcnemar_report(a, b)
    assert report["table"] == [[2, 2], [1, 2]]
    assert all(type(v) is int for row in report["table"] for v in row)
    assert report["method"] == "exact binomial"
    assert report["statistic"] == 1.0
    assert report["p_value"] == pytest.approx(_exact_two_sided(2, 1))
    assert report["n"] == 7
    assert report["accuracy_a"] == pytest.approx(4 / 7)
    assert report["accuracy_b"] == pytest.approx(3 / 7)
    assert report["significant_at_0.05"] is False
    assert set(report) == {"table", "statistic", "p_value", "method", "n", "accuracy_a", "accuracy_b", "significant_at_0.05"}


def test_report_orientation_swaps_with_models():
    a = [1, 1, 0, 0, 1]
    b = [1, 0, 1, 1, 0]
    assert mcnemar_report(a, b)["table"] == [[1, 2], [2, 0]]
    assert mcnemar_report(b, a)["table"] == [[1, 2], [2, 0]]
    assert mcnemar_report([1, 1, 1, 0], [1, 0, 0, 0])["table"] == [[1, 2], [0, 1]]
    assert mcnemar_report([1, 0, 0, 0], [1, 1, 1, 0])["table"] == [[1, 0], [2, 1]]


def test_report_published_example():
    (n11, n10), (n01, n00) = PUBLISHED
    a = np.repeat([True, True, False, False], [n11, n10, n01, n00])
    b = np.repeat([True, False, True, False], [n11, n10, n01, n00])
    report = mcnemar_report(a, b)
    assert report["table"] == PUBLISHED
    assert report["method"] == "chi-square (continuity corrected)"
    assert report["n"] == sum(map(sum, PUBLISHED))
    assert report["accuracy_a"] == pytest.approx((n11 + n10) / report["n"])
    assert report["accuracy_b"] == pytest.approx((n11 + n01) / report["n"])
    assert report["p_value"] == pytest.approx(mcnemar(PUBLISHED)[1])
    assert report["significant_at_0.05"] is True
    assert mcnemar_report(a, b, exact=True)["method"] == "exact binomial"


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ([True, False], [True]),  # length mismatch
        ([], []),  # empty
        ([1, 2], [1, 0]),  # not 0/1
        ([[True, False]], [[True, False]]),  # 2-D
        (["x", "y"], [True, False]),  # strings
    ],
)
def test_report_bad_input_raises(a, b):
    with pytest.raises(ValueError):
        mcnemar_report(a, b)


# ---------------------------------------------------------------------------- mean_std / format


def test_mean_std_matches_numpy():
    values = [0.91, 0.93, 0.92, 0.95, 0.89]
    mean, std = mean_std(values)
    assert mean == pytest.approx(np.mean(values))
    assert std == pytest.approx(np.std(values, ddof=1))


def test_mean_std_single_value():
    assert mean_std([0.9]) == (0.9, 0.0)


@pytest.mark.parametrize("values", [[], [0.9, float("nan")], [[0.9, 0.8]]])
def test_mean_std_bad_input_raises(values):
    with pytest.raises(ValueError):
        mean_std(values)


def test_format_mean_std():
    assert format_mean_std([0.9123, 0.9123]) == "91.23 ± 0.00"
    mean, std = np.mean([0.91, 0.92, 0.93]), np.std([0.91, 0.92, 0.93], ddof=1)
    assert format_mean_std([0.91, 0.92, 0.93]) == f"{mean * 100:.2f} ± {std * 100:.2f}" == "92.00 ± 1.00"
    assert format_mean_std([0.91, 0.92, 0.93], digits=3, percent=False) == "0.920 ± 0.010"
    assert format_mean_std([0.5], digits=0) == "50 ± 0"
    with pytest.raises(ValueError, match="digits"):
        format_mean_std([0.5], digits=-1)


# ---------------------------------------------------------------------------- ttest

A = [0.912, 0.905, 0.921, 0.899, 0.915]
B = [0.894, 0.901, 0.887, 0.903, 0.890]


def test_welch_matches_scipy():
    expected = sps.ttest_ind(A, B[:4], equal_var=False)
    assert ttest(A, B[:4]) == pytest.approx((expected.statistic, expected.pvalue))


def test_student_matches_scipy():
    expected = sps.ttest_ind(A, B[:4], equal_var=True)
    assert ttest(A, B[:4], equal_var=True) == pytest.approx((expected.statistic, expected.pvalue))
    assert ttest(A, B[:4], equal_var=True) != pytest.approx(ttest(A, B[:4]))


def test_paired_matches_scipy():
    expected = sps.ttest_rel(A, B)
    assert ttest(A, B, paired=True) == pytest.approx((expected.statistic, expected.pvalue))


def test_ttest_returns_plain_floats():
    statistic, p = ttest(A, B)
    assert type(statistic) is float and type(p) is float


@pytest.mark.parametrize("kwargs", [{}, {"equal_var": True}, {"paired": True}])
def test_ttest_zero_variance(kwargs):
    assert ttest([0.9, 0.9, 0.9], [0.9, 0.9, 0.9], **kwargs) == (0.0, 1.0)
    assert ttest([0.9, 0.9, 0.9], [0.8, 0.8, 0.8], **kwargs) == (math.inf, 0.0)
    assert ttest([0.8, 0.8, 0.8], [0.9, 0.9, 0.9], **kwargs) == (-math.inf, 0.0)


def test_ttest_unpaired_zero_variance_different_lengths():
    assert ttest([0.9, 0.9, 0.9], [0.9, 0.9]) == (0.0, 1.0)


def test_paired_constant_differences_never_nan():
    assert ttest([0.1, 0.5, 0.7], [0.1, 0.5, 0.7], paired=True) == (0.0, 1.0)
    assert ttest([1.0, 2.0, 3.0], [0.5, 1.5, 2.5], paired=True) == (math.inf, 0.0)


def test_one_constant_group_is_an_ordinary_test():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # SciPy's cancellation warning for the constant group
        expected = sps.ttest_ind([0.9, 0.9, 0.9], B, equal_var=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # ttest itself stays quiet
        assert ttest([0.9, 0.9, 0.9], B) == pytest.approx((expected.statistic, expected.pvalue))


@pytest.mark.parametrize(
    ("a", "b", "kwargs"),
    [
        ([0.9], [0.8, 0.7], {}),  # too few values
        ([0.9, 0.8], [0.7], {}),
        ([0.9, 0.8, 0.7], [0.9, 0.8], {"paired": True}),  # paired length mismatch
        ([0.9, float("nan")], [0.8, 0.7], {}),  # NaN
        ([[0.9, 0.8]], [0.8, 0.7], {}),  # 2-D
    ],
)
def test_ttest_bad_input_raises(a, b, kwargs):
    with pytest.raises(ValueError):
        ttest(a, b, **kwargs)


def test_mcnemar_paired_pairs_by_sample_whatever_the_order():
    """The one pairing (report, report --mcnemar, the Evaluation page): by key, on the shared samples only."""
    from core.stats import mcnemar_paired, mcnemar_report

    a = {"x": True, "y": False, "z": True, "w": False, "only_a": True}
    b = {"w": True, "z": True, "y": True, "x": False, "only_b": False}  # another order, another unshared sample
    paired = mcnemar_paired(a, b)
    expected = mcnemar_report([False, True, False, True], [True, False, True, True])  # keys w, x, y, z
    assert {k: v for k, v in paired.items() if k != "unpaired"} == expected
    assert paired["unpaired"] == 2 and paired["n"] == 4 and paired["table"] == [[1, 1], [2, 0]]
