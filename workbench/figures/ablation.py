"""The figure of a tag ablation (`AblationResult` of `workbench.analysis.ablation`, read through its
fields and `label_shares()`): variants × measures, and the targets' shares."""
from __future__ import annotations

from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from workbench.figures.style import CMAP_DIVERGING, publication_style

CMAP_DIVERGENCE = "Purples"   # KL and JS are ≥ 0: a sequential map from white


@publication_style()
def plot_ablation(result: Any) -> Figure:
    """Left: heatmap of rows (base, then variants) × measures — KL(base ‖ variant) and JS of the
    next-token distributions at the first answer position, then Δ log p of each target (the whole
    continuation). KL and JS share one sequential scale from 0 (nats); the Δ log p columns share one
    diverging scale centred on 0: cells are comparable across the columns of a block. Tiny negative
    divergences (float rounding: KL is ≥ 0) are shown as 0. Right: with two or more targets, each
    row's label shares (stacked bars); with one target, its per-token probability (geometric mean)."""
    names = list(result.targets)
    columns = ["KL", "JS"] + [f"Δ log p({n})" for n in names]
    divergences = np.clip(np.array([[row.kl, row.js] for row in result.rows], dtype=float), 0.0, None)
    deltas = np.array([[row.logprob(n) - result.base.logprob(n) for n in names] for row in result.rows],
                      dtype=float).reshape(len(result.rows), len(names))
    labels = [row.label for row in result.rows]
    n = len(labels)
    fig = Figure(figsize=(10.0, 2.2 + 0.22 * n))
    heat_ax, bar_ax = fig.subplots(1, 2, sharey=True, gridspec_kw={"width_ratios": [max(3, len(columns)), 2]})
    top = max(float(divergences.max()), 1e-12)
    limit = max(float(np.abs(deltas).max()) if deltas.size else 0.0, 1e-12)
    div_image = heat_ax.imshow(divergences, cmap=CMAP_DIVERGENCE, vmin=0, vmax=top, aspect="auto",
                               interpolation="nearest", extent=(-0.5, 1.5, n - 0.5, -0.5))
    delta_image = heat_ax.imshow(deltas, cmap=CMAP_DIVERGING, vmin=-limit, vmax=limit, aspect="auto",
                                 interpolation="nearest", extent=(1.5, 1.5 + len(names), n - 0.5, -0.5))
    heat_ax.set_xlim(-0.5, len(columns) - 0.5)
    heat_ax.set_ylim(n - 0.5, -0.5)
    heat_ax.axvline(1.5, color="black", linewidth=1)
    heat_ax.set_xticks(range(len(columns)), columns, rotation=30, ha="right")
    heat_ax.set_yticks(range(n), labels)
    if len(columns) <= 8:
        shade = np.concatenate([divergences / top, np.abs(deltas) / limit], axis=1)
        for (i, j), value in np.ndenumerate(np.concatenate([divergences, deltas], axis=1)):
            heat_ax.text(j, i, f"{value:.2g}", ha="center", va="center", fontsize=6,
                         color="white" if shade[i, j] > 0.6 else "black")
    fig.colorbar(div_image, ax=heat_ax, location="bottom", shrink=0.45, aspect=25, pad=0.02, anchor=(0.0, 1.0),
                 label="KL, JS at the first answer position (nats)")
    fig.colorbar(delta_image, ax=heat_ax, location="bottom", shrink=0.45, aspect=25, pad=0.02, anchor=(1.0, 1.0),
                 label="Δ log p of the whole target (nats)")
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
