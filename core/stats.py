"""Statistics for comparing deepfake detectors.

* McNemar's test compares two detectors evaluated on the *same* test set, using only the
  samples on which they disagree (the discordant pairs).
* Mean ± sample standard deviation and t-tests compare methods across training seeds.

Every public function validates its inputs and raises ``ValueError`` with a clear message;
no function returns NaN.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats as sps

__all__ = ["EXACT_THRESHOLD", "format_mean_std", "mcnemar", "mcnemar_report", "mean_std", "ttest"]

EXACT_THRESHOLD = 25
"""With ``exact=None``, McNemar uses the exact binomial test when b + c < this, else chi-square."""

METHOD_EXACT = "exact binomial"
METHOD_CHI2 = "chi-square (continuity corrected)"


# ---------------------------------------------------------------------------- validation


def _as_table(table: ArrayLike) -> np.ndarray:
    """The 2x2 contingency table as an int64 array, or ValueError."""
    try:
        arr = np.asarray(table)
    except (TypeError, ValueError) as exc:  # ragged nested lists
        raise ValueError(f"table must be a 2x2 array of counts: {exc}") from exc
    if arr.shape != (2, 2):
        raise ValueError(f"table must have shape (2, 2), got {arr.shape}")
    if arr.dtype.kind not in "iuf":
        raise ValueError(f"table must hold numeric counts, got dtype {arr.dtype}")
    if not np.all(np.isfinite(arr)):
        raise ValueError("table counts must be finite")
    if np.any(arr < 0):
        raise ValueError(f"table counts must be non-negative, got {arr.tolist()}")
    if np.any(arr != np.round(arr)):
        raise ValueError(f"table counts must be integers, got {arr.tolist()}")
    return arr.astype(np.int64)


def _check_exact(exact: Any) -> bool | None:
    if exact is not None and not isinstance(exact, (bool, np.bool_)):
        raise ValueError(f"exact must be True, False or None, got {exact!r}")
    return None if exact is None else bool(exact)


def _use_exact(b: int, c: int, exact: bool | None) -> bool:
    return (b + c < EXACT_THRESHOLD) if exact is None else exact


def _as_values(values: ArrayLike, name: str, min_size: int) -> np.ndarray:
    """A 1-D finite float array with at least ``min_size`` values, or ValueError."""
    try:
        arr = np.asarray(values, dtype=float)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a 1-D sequence of numbers: {exc}") from exc
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.size < min_size:
        raise ValueError(f"{name} needs at least {min_size} value(s), got {arr.size}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite (no NaN or inf)")
    return arr


def _as_correctness(values: ArrayLike, name: str) -> np.ndarray:
    """A 1-D boolean array (bools, or numbers that are all 0 or 1), or ValueError."""
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of per-sample correctness, got shape {arr.shape}")
    if arr.dtype.kind == "b":
        return arr
    if arr.dtype.kind not in "iuf" or not np.all(np.isin(arr, (0, 1))):
        raise ValueError(f"{name} must be boolean (or 0/1) per-sample correctness")
    return arr.astype(bool)


# ---------------------------------------------------------------------------- McNemar


def mcnemar(table: ArrayLike, exact: bool | None = None) -> tuple[float, float]:
    """McNemar's test for two classifiers on the same samples; returns ``(statistic, p_value)``.

    ``table`` is ``[[both correct, A correct B wrong], [A wrong B correct, both wrong]]``;
    only the discordant counts b = table[0][1] and c = table[1][0] matter.

    * chi-square (continuity corrected): statistic = (|b - c| - 1)^2 / (b + c),
      p = P(chi2_1 >= statistic).
    * exact: statistic = min(b, c), p = min(1, 2 * sum_{k <= min(b, c)} C(b + c, k) / 2^(b + c))
      (two-sided binomial test, n = b + c, p = 0.5).

    ``exact=None`` picks the exact test when b + c < 25. With b + c == 0 the detectors never
    disagree and the result is ``(0.0, 1.0)``.
    """
    counts = _as_table(table)
    exact = _check_exact(exact)
    b, c = int(counts[0, 1]), int(counts[1, 0])
    n = b + c
    if n == 0:
        return 0.0, 1.0
    if _use_exact(b, c, exact):
        k = min(b, c)
        p = sps.binomtest(k, n, 0.5, alternative="two-sided").pvalue
        return float(k), float(min(1.0, p))
    statistic = (abs(b - c) - 1) ** 2 / n
    return float(statistic), float(sps.chi2.sf(statistic, 1))


def mcnemar_paired(correct_a: Mapping[str, bool], correct_b: Mapping[str, bool], exact: bool | None = None) -> dict[str, Any]:
    """McNemar's test of two detectors paired sample by sample: per-sample correctness keyed by sample (an image path),
    on the samples both were scored on, in key order (:func:`mcnemar_report`); ``unpaired`` counts the rest."""
    common = sorted(correct_a.keys() & correct_b.keys())
    result = mcnemar_report([correct_a[k] for k in common], [correct_b[k] for k in common], exact)
    return {**result, "unpaired": len(correct_a.keys() ^ correct_b.keys())}


def mcnemar_report(correct_a: ArrayLike, correct_b: ArrayLike, exact: bool | None = None) -> dict[str, Any]:
    """McNemar's test from per-sample correctness of detectors A and B on the same test set.

    table = [[sum(A & B), sum(A & ~B)], [sum(~A & B), sum(~A & ~B)]]; see :func:`mcnemar`.
    Returns a JSON-serialisable dict with the table, statistic, p-value, method, n, both
    accuracies and whether p < 0.05.
    """
    a = _as_correctness(correct_a, "correct_a")
    b = _as_correctness(correct_b, "correct_b")
    if a.shape != b.shape:
        raise ValueError(f"correct_a and correct_b must have the same length, got {a.size} and {b.size}")
    if a.size == 0:
        raise ValueError("correct_a and correct_b must not be empty")
    exact = _check_exact(exact)
    table = [[int(np.sum(a & b)), int(np.sum(a & ~b))], [int(np.sum(~a & b)), int(np.sum(~a & ~b))]]
    statistic, p_value = mcnemar(table, exact=exact)
    return {
        "table": table,
        "statistic": statistic,
        "p_value": p_value,
        "method": METHOD_EXACT if _use_exact(table[0][1], table[1][0], exact) else METHOD_CHI2,
        "n": int(a.size),
        "accuracy_a": float(np.mean(a)),
        "accuracy_b": float(np.mean(b)),
        "significant_at_0.05": bool(p_value < 0.05),
    }


# ---------------------------------------------------------------------------- across seeds


def mean_std(values: ArrayLike) -> tuple[float, float]:
    """Mean and sample standard deviation: mean = sum(x) / n, std = sqrt(sum((x - mean)^2) / (n - 1)).

    A single value has std 0.0.
    """
    arr = _as_values(values, "values", 1)
    mean = float(np.mean(arr))
    std = float(np.std(arr, ddof=1)) if arr.size > 1 else 0.0
    return mean, std


def _degenerate(diff: float) -> tuple[float, float]:
    """Result when the t statistic's denominator is zero: no evidence, or infinite evidence."""
    if diff == 0:
        return 0.0, 1.0
    return math.copysign(math.inf, diff), 0.0


def ttest(a: ArrayLike, b: ArrayLike, paired: bool = False, equal_var: bool = False) -> tuple[float, float]:
    """Two-sided t-test between two methods' per-seed scores; returns ``(statistic, p_value)``.

    * Welch (default): t = (mean_a - mean_b) / sqrt(s_a^2 / n_a + s_b^2 / n_b), Welch-Satterthwaite df.
    * Student (``equal_var=True``): t = (mean_a - mean_b) / (s_p * sqrt(1 / n_a + 1 / n_b)), df = n_a + n_b - 2.
    * paired (``paired=True``): d = a - b, t = mean(d) / (s_d / sqrt(n)), df = n - 1.

    When the denominator is zero (both groups constant, or for a paired test constant
    differences) the result is ``(0.0, 1.0)`` if mean(a) == mean(b), else
    ``(±inf, 0.0)`` with the sign of mean(a) - mean(b). Never NaN.
    """
    x = _as_values(a, "a", 2)
    y = _as_values(b, "b", 2)
    if paired:
        if x.size != y.size:
            raise ValueError(f"a paired t-test needs equal lengths, got {x.size} and {y.size}")
        d = x - y
        if np.all(d == d[0]):
            return _degenerate(float(d[0]))
        res = sps.ttest_rel(x, y)
    else:
        if np.all(x == x[0]) and np.all(y == y[0]):
            return _degenerate(float(x[0] - y[0]))
        with warnings.catch_warnings():
            if np.all(x == x[0]) or np.all(y == y[0]):  # one constant group: SciPy's cancellation warning is spurious
                warnings.filterwarnings("ignore", message="Precision loss occurred", category=RuntimeWarning)
            res = sps.ttest_ind(x, y, equal_var=bool(equal_var))
    return float(res.statistic), float(res.pvalue)


def format_mean_std(values: ArrayLike, digits: int = 2, percent: bool = True) -> str:
    """``"mean ± std"`` with ``digits`` decimals (see :func:`mean_std`); ``percent`` multiplies by 100."""
    if isinstance(digits, bool) or not isinstance(digits, (int, np.integer)) or digits < 0:
        raise ValueError(f"digits must be a non-negative integer, got {digits!r}")
    mean, std = mean_std(values)
    scale = 100.0 if percent else 1.0
    return f"{mean * scale:.{digits}f} ± {std * scale:.{digits}f}"
