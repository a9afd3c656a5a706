"""Linear probes: held-out accuracy per layer with its bootstrap CI band and the chance line."""
from __future__ import annotations

from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from workbench.figures.style import figure_and_axes


def plot_probe(result: Any, *, ax: Axes | None = None, title: str | None = None, label: str | None = None) -> Figure:
    """`result`: a `ProbeResult`. Draws into `ax` when given (several probes on one panel)."""
    fig, ax = figure_and_axes(ax, (6.0, 3.5))
    x = np.arange(len(result.layers))
    line, = ax.plot(x, result.accuracy, marker="o", markersize=3, label=label or result.point)
    ax.fill_between(x, result.ci_low, result.ci_high, color=line.get_color(), alpha=0.2, linewidth=0)
    ax.axhline(result.chance, color="0.4", linestyle="--", linewidth=1, label=f"chance ({result.chance:.2f})")
    ax.set_xticks(x, result.layers)
    ax.set(xlabel="layer", ylabel=f"held-out accuracy (n={result.n_test})", ylim=(0, 1.02))
    ax.legend(frameon=False, fontsize=7, loc="best")
    split = "grouped split" if result.grouped else "split by item"
    ax.set_title(title or f"linear probe on {result.point}: {len(result.classes)} classes, {split}")
    return fig
