"""The figure of a tag ablation (`AblationResult` of `workbench.analysis.ablation`, read through its
fields and `label_shares()`): variants × measures, and the targets' shares."""
from __future__ import annotations

from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from workbench.figures.style import CMAP_DIVERGING, publication_style


@publication_style()
def plot_ablation(result: Any) -> Figure:
    """Left: heatmap of rows (base, then variants) × measures — KL, JS and Δ log p of each
    target; each column is coloured relative to its own largest |value| and annotated with
    the value. Right: with two or more targets, each row's label shares (stacked bars);
    with one target, its per-token probability (geometric mean)."""
    names = list(result.targets)
    columns = ["KL", "JS"] + [f"Δ log p({n})" for n in names]
    values = np.array([[row.kl, row.js] + [row.logprob(n) - result.base.logprob(n) for n in names]
                       for row in result.rows])
    scale = np.abs(values).max(axis=0)
    colours = values / np.where(scale > 0, scale, 1.0)
    labels = [row.label for row in result.rows]
    fig = Figure(figsize=(10.0, 1.8 + 0.22 * len(labels)))
    heat_ax, bar_ax = fig.subplots(1, 2, sharey=True, gridspec_kw={"width_ratios": [max(3, len(columns)), 2]})
    image = heat_ax.imshow(colours, cmap=CMAP_DIVERGING, vmin=-1, vmax=1, aspect="auto")
    heat_ax.set_xticks(range(len(columns)), columns, rotation=30, ha="right")
    heat_ax.set_yticks(range(len(labels)), labels)
    if len(columns) <= 8:
        for (i, j), value in np.ndenumerate(values):
            heat_ax.text(j, i, f"{value:.2g}", ha="center", va="center", fontsize=6,
                         color="white" if abs(colours[i, j]) > 0.6 else "black")
    fig.colorbar(image, ax=heat_ax, location="bottom", shrink=0.6, aspect=30, pad=0.02,
                 label="value / largest |value| of its column")
    heat_ax.set_title("tag ablation vs the base prompt", loc="left")
    _plot_bars(result, bar_ax, names)
    return fig

def _plot_bars(result: Any, ax: Axes, names: list[str]) -> None:
    y = np.arange(len(result.rows))
    if len(names) > 1:
        shares, left = result.label_shares(), np.zeros(len(result.rows))
        for t, name in enumerate(names):
            ax.barh(y, shares[:, t], left=left, label=name)
            left += shares[:, t]
        ax.set(xlim=(0, 1), xlabel="share among the targets")
        ax.legend(loc="lower left", bbox_to_anchor=(0.0, 1.0), ncol=min(3, len(names)), frameon=False)
    else:
        mean = [float(np.exp(np.mean(row.token_logprobs[names[0]]))) for row in result.rows]
        ax.barh(y, mean)
        ax.set(xlim=(0, max(mean) * 1.1 or 1), xlabel=f"per-token p({names[0]})")
    ax.tick_params(axis="y", labelleft=False)
