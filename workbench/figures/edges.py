"""Figure of attention-edge knockouts (`EdgeKnockoutResult` of `workbench.analysis.edges`, read through
its fields): the mean change of the score as a heatmap, layer set × edge, and with several clips
each edge's mean change per layer set with its bootstrap confidence interval."""
from __future__ import annotations

import re
from typing import Any

import numpy as np
from matplotlib.colors import TwoSlopeNorm
from matplotlib.figure import Figure

from workbench.figures.style import CMAP_DIVERGING, publication_style

MAX_ANNOTATED_CELLS = 80    # heatmaps with more cells than this are not annotated (illegible)


@publication_style()
def plot_edges(result: Any, *, title: str | None = None) -> Figure:
    """Left: Δ score (mean over clips), layer set (rows, first on top) × edge, on a diverging scale
    around 0. Right, when the result holds more than one clip: the same means against layer set, one
    line per edge, with their bootstrap 95 % CIs (`result.to_pandas()`'s delta_low / delta_high)."""
    table = result.to_pandas()
    n_layers, n_edges = len(result.layers), len(result.edges)
    means = table["delta"].to_numpy(dtype=float).reshape(n_layers, n_edges)
    with_ci = result.n > 1
    height = max(2.8, 1.6 + 0.3 * n_layers)
    fig = Figure(figsize=(5.0 + 0.7 * n_edges + (4.5 if with_ci else 0.0), height))
    axes = fig.subplots(1, 2, width_ratios=(1.0, 1.1)) if with_ci else [fig.add_subplot()]
    ax = axes[0]
    limit = max(float(np.nanmax(np.abs(means))), 1e-12)
    image = ax.imshow(means, cmap=CMAP_DIVERGING, aspect="auto", norm=TwoSlopeNorm(0.0, -limit, limit))
    if means.size <= MAX_ANNOTATED_CELLS:
        for (i, j), v in np.ndenumerate(means):
            ax.text(j, i, "0" if abs(v) < 1e-6 else f"{v:.2g}", ha="center", va="center", fontsize=7,
                    color="white" if abs(v) > 0.6 * limit else "black")
    ax.set_xticks(np.arange(n_edges), list(result.edges), rotation=30, ha="right")
    ax.set_yticks(np.arange(n_layers), list(result.layers))
    ax.set(xlabel="edge blocked (rows → cols)", ylabel=f"{result.stack} layers blocked")
    fig.colorbar(image, ax=ax, pad=0.01, label="Δ score" + (" (mean)" if with_ci else ""))
    if with_ci:
        right = axes[1]
        x = np.arange(n_layers)
        for j, edge in enumerate(result.edges):
            rows = table[table["edge"] == edge]
            offset = (j - (n_edges - 1) / 2) * 0.08
            low, high = rows["delta_low"].to_numpy(float), rows["delta_high"].to_numpy(float)
            mean = rows["delta"].to_numpy(float)
            right.errorbar(x + offset, mean, yerr=np.stack([mean - low, high - mean]), marker="o", markersize=3,
                           capsize=2, linewidth=1.0, label=edge)
        right.axhline(0, color="0.3", linewidth=0.8)
        right.set_xticks(x, list(result.layers), rotation=30 if n_layers > 8 else 0)
        right.set(xlabel=f"{result.stack} layers blocked", ylabel=f"Δ score, mean and 95 % CI (n = {result.n})")
        right.legend(frameon=False, fontsize=7)
    if title is None:
        prompt = re.sub(r"<audio>.*?</audio>", "", result.prompts[0]) if result.prompts else ""
        clips = f"{result.n} clips" if with_ci else f"prompt {prompt}"
        title = f"attention edges blocked · score {result.measure} · {clips}"
    fig.suptitle(title, x=0.01, ha="left", fontsize=8)
    return fig
