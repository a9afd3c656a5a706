"""Means with bootstrap confidence intervals, for every sweep and probe run over many clips.

scipy does the resampling (`scipy.stats.bootstrap`, the percentile interval: BCa's jackknife is
undefined for the 0/1 correctness a probe or a benchmark item gives when nearly all agree); this
module only fixes the seed, refuses what cannot be bootstrapped, and returns one small record a
DataFrame row holds.

    ci = mean_ci([0.1, 0.4, 0.35, 0.2])     # MeanCI(mean=0.2625, low=…, high=…, n=4)
    ci.as_dict()                            # {"mean": …, "ci_low": …, "ci_high": …, "n": 4}
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np
import pandas as pd
from scipy import stats

CONFIDENCE = 0.95
RESAMPLES = 2000
SEED = 0


@dataclass(frozen=True)
class MeanCI:
    """The mean of `n` values and its bootstrap confidence interval [low, high]."""

    mean: float
    low: float
    high: float
    n: int

    def as_dict(self) -> dict[str, float | int]:
        values = asdict(self)
        return {"mean": values["mean"], "ci_low": values["low"], "ci_high": values["high"], "n": values["n"]}


def mean_ci(values: Sequence[float] | np.ndarray, *, confidence: float = CONFIDENCE,
            resamples: int = RESAMPLES, seed: int = SEED) -> MeanCI:
    """Mean of `values` with a percentile-bootstrap interval (seeded: the same values give the same CI).

    One value has no spread to resample: its interval is the value itself (n=1 says so).
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence={confidence!r}: give a level between 0 and 1, e.g. 0.95")
    if isinstance(resamples, bool) or not isinstance(resamples, (int, np.integer)) or resamples < 1:
        raise ValueError(f"resamples={resamples!r}: give a positive number of bootstrap resamples, e.g. 2000")
    data = np.asarray(values, dtype=np.float64).ravel()
    if data.size == 0:
        raise ValueError("mean_ci needs at least one value: the sweep produced none (were any clips given?)")
    if not np.all(np.isfinite(data)):
        raise ValueError(f"mean_ci got {int((~np.isfinite(data)).sum())} non-finite values of {data.size}: "
                         "drop or fix them before averaging (a NaN score usually means an empty reference)")
    mean = float(data.mean())
    if data.size == 1 or np.ptp(data) == 0:
        return MeanCI(mean, mean, mean, int(data.size))
    result = stats.bootstrap((data,), np.mean, confidence_level=confidence, n_resamples=resamples,
                             method="percentile", random_state=np.random.default_rng(seed))
    low, high = result.confidence_interval
    return MeanCI(mean, float(low), float(high), int(data.size))


def mean_ci_columns(table: pd.DataFrame, by: str | list[str], value: str, **options) -> pd.DataFrame:
    """Group a long table (one row per clip) by `by` and give each group's mean and CI of `value`."""
    rows = []
    for key, group in table.groupby(by, sort=False):
        keys = key if isinstance(key, tuple) else (key,)
        names = by if isinstance(by, list) else [by]
        rows.append({**dict(zip(names, keys)), **mean_ci(group[value].to_numpy(), **options).as_dict()})
    return pd.DataFrame(rows)
