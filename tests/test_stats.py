"""mean_ci / mean_ci_columns: known answers, the interval's behaviour with n, the degenerate cases,
refusals that name the problem, and seeded reproducibility."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from workbench.analysis.stats import MeanCI, mean_ci, mean_ci_columns


def test_known_mean_and_the_interval_contains_it():
    ci = mean_ci([0.1, 0.4, 0.35, 0.2])
    assert ci.mean == pytest.approx(0.2625) and ci.n == 4
    assert 0.1 <= ci.low < ci.mean < ci.high <= 0.4      # a bootstrap mean never leaves the data's range
    assert ci.as_dict() == {"mean": ci.mean, "ci_low": ci.low, "ci_high": ci.high, "n": 4}


def test_width_matches_the_normal_approximation_and_narrows_with_n():
    rng = np.random.default_rng(1)
    widths = {}
    for n in (25, 100, 400):
        values = rng.standard_normal(n)
        ci = mean_ci(values)
        assert ci.low < values.mean() < ci.high
        widths[n] = ci.high - ci.low
        # 95 %: about ±1.96 standard errors
        expected = 2 * 1.96 * values.std(ddof=1) / np.sqrt(n)
        assert widths[n] == pytest.approx(expected, rel=0.2)
    assert widths[400] < widths[100] < widths[25]
    assert widths[25] / widths[400] == pytest.approx(4.0, rel=0.3)      # ∝ 1/√n


def test_a_lower_confidence_gives_a_narrower_interval():
    values = np.random.default_rng(2).standard_normal(60)
    wide, narrow = mean_ci(values, confidence=0.99), mean_ci(values, confidence=0.8)
    assert wide.low < narrow.low < narrow.high < wide.high


def test_one_value_or_no_spread_is_its_own_interval():
    assert mean_ci([0.7]) == MeanCI(0.7, 0.7, 0.7, 1)
    assert mean_ci(np.ones(10)) == MeanCI(1.0, 1.0, 1.0, 10)        # a probe right on every item


def test_accuracy_of_zero_one_values():
    correct = np.array([1] * 30 + [0] * 10, dtype=float)
    ci = mean_ci(correct)
    assert ci.mean == 0.75 and 0.6 < ci.low < 0.75 < ci.high < 0.9


@pytest.mark.parametrize("values, options, message", [
    ([], {}, "at least one value"),
    ([0.1, np.nan, 0.3], {}, "1 non-finite values of 3"),
    ([0.1, np.inf], {}, "non-finite"),
    ([0.1, 0.2], {"confidence": 95}, "confidence=95"),
    ([0.1, 0.2], {"resamples": 0}, "resamples=0"),
])
def test_bad_input_names_the_problem(values, options, message):
    with pytest.raises(ValueError, match=message):
        mean_ci(values, **options)


def test_same_seed_same_interval_other_seed_other_interval():
    values = np.random.default_rng(3).standard_normal(30)
    assert mean_ci(values, seed=5) == mean_ci(values, seed=5)
    assert mean_ci(values, seed=5) != mean_ci(values, seed=6)
    assert mean_ci(values, seed=5).mean == mean_ci(values, seed=6).mean


def test_columns_give_each_group_its_own_interval():
    rng = np.random.default_rng(4)
    table = pd.DataFrame({"layer": np.repeat([0, 1], 20), "task": np.tile(["a", "b"], 20),
                          "score": rng.random(40)})
    out = mean_ci_columns(table, "layer", "score")
    assert list(out["layer"]) == [0, 1] and list(out.columns) == ["layer", "mean", "ci_low", "ci_high", "n"]
    for layer, row in out.set_index("layer").iterrows():
        expected = mean_ci(table.loc[table["layer"] == layer, "score"].to_numpy())
        assert (row["mean"], row["ci_low"], row["ci_high"], row["n"]) == (expected.mean, expected.low,
                                                                          expected.high, expected.n)
    both = mean_ci_columns(table, ["layer", "task"], "score")
    assert len(both) == 4 and set(both["n"]) == {10}
