"""Figure of attribution patching checked against real patching (`workbench.analysis.attribution_patching`):
the estimated effect of every cell against the effect patching it really has. The estimates
themselves are drawn by `workbench.figures.interventions.plot_patching`, as patching results are.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from workbench.figures.style import LINE_COLOR, STRIP_COLOR, figure_and_axes, publication_style

MAX_LABELLED = 6    # the cells with the largest real effect are named


@publication_style()
def plot_attribution_agreement(agreement: Any, *, ax: Axes | None = None, title: str | None = None) -> Figure:
    """An `Agreement`: one dot per layer × column, estimated effect (x) against patched effect (y),
    the identity line dashed; the cells that matter most are labelled "L{layer} {column}"."""
    table = agreement.table
    fig, ax = figure_and_axes(ax, (4.6, 4.2))
    x, y = table["estimated"].to_numpy(float), table["patched"].to_numpy(float)
    low, high = float(min(x.min(), y.min())), float(max(x.max(), y.max()))
    pad = 0.05 * max(high - low, 1e-12)
    ax.plot([low - pad, high + pad], [low - pad, high + pad], color="0.6", linestyle="--", linewidth=0.8)
    ax.scatter(x, y, s=14, color=LINE_COLOR, alpha=0.8, linewidths=0)
    for k in np.argsort(-np.abs(y))[:MAX_LABELLED]:
        ax.annotate(f"L{table['layer'].iloc[k]} {table['column'].iloc[k]}", (x[k], y[k]), fontsize=6,
                    color=STRIP_COLOR, xytext=(3, 3), textcoords="offset points")
    ax.axhline(0, color="0.85", linewidth=0.6)
    ax.axvline(0, color="0.85", linewidth=0.6)
    ax.set(xlabel="attribution patching: estimated Δ score", ylabel="activation patching: Δ score")
    ax.set_title(title or f"estimate vs patching · Pearson r = {agreement.pearson:.2f}, Spearman ρ = "
                          f"{agreement.spearman:.2f} (n = {agreement.n})", loc="left", fontsize=8)
    return fig
