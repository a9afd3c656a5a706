"""Figures of causal tracing with corrupted audio (`workbench.analysis.tracing`): one clip's layer ×
(tags | audio bins | text | answer) heatmap (Whisper's encoder: audio bins | padding), and over many
clips the mean per cell beside its bootstrap CI along the columns. Audio bins are labelled by their
seconds (one clip) or t0…tn (many clips of different lengths: each bin is the same share of its clip).
"""
from __future__ import annotations

from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.colors import TwoSlopeNorm
from matplotlib.figure import Figure

from workbench.figures.style import CMAP_DIVERGING, GROUP_COLORS, figure_and_axes, publication_style

LABELS = {"recovery": "recovery (0 = corrupted, 1 = clean)", "delta": "Δ score vs corrupted", "score": "score"}
MAX_ANNOTATED_CELLS = 80


def _heatmap(ax: Axes, values: np.ndarray, columns: list[str], kinds: tuple[str, ...], layers: tuple[int, ...],
             stack: str, value: str) -> Any:
    limit = max(float(np.nanmax(np.abs(values))) if np.isfinite(values).any() else 1.0, 1e-12)
    if value == "recovery":
        limit = max(limit, 1.0)
    image = ax.imshow(values, cmap=CMAP_DIVERGING, aspect="auto", norm=TwoSlopeNorm(0.0, -limit, limit))
    if values.size <= MAX_ANNOTATED_CELLS:
        for (i, j), v in np.ndenumerate(values):
            ax.text(j, i, "–" if not np.isfinite(v) else f"{v:.2f}", ha="center", va="center", fontsize=6,
                    color="white" if abs(v) > 0.6 * limit else "black")
    ax.set_xticks(np.arange(len(columns)), columns, rotation=40, ha="right")
    for tick, kind in zip(ax.get_xticklabels(), kinds):   # the position groups in their colours, padding grey
        tick.set_color("0.45" if kind == "padding" else
                       GROUP_COLORS.get("audio" if kind == "audio" else "tags" if kind == "tags" else "text"))
    ax.set_yticks(np.arange(len(layers)), [str(layer) for layer in layers])
    what = "encoder frames restored (binned by time)" if stack == "encoder" else "positions restored (audio binned by time)"
    ax.set(xlabel=what, ylabel=f"{stack} layer")
    return image


def _value(result: Any, value: str) -> np.ndarray:
    if value not in LABELS:
        raise ValueError(f"value={value!r}: choose one of {tuple(LABELS)}")
    return np.asarray({"recovery": result.recovery, "delta": result.delta, "score": result.scores}[value], float)


@publication_style()
def plot_causal_trace(trace: Any, *, value: str = "recovery", ax: Axes | None = None,
                      title: str | None = None) -> Figure:
    """A `CausalTrace`: layer (rows, first on top) × column heatmap of `value` ("recovery", "delta"
    or "score"), audio bins labelled by their seconds."""
    values = _value(trace, value)
    fig, ax = figure_and_axes(ax, (max(6.0, 1.8 + 0.62 * len(trace.columns)), max(2.8, 1.5 + 0.32 * len(trace.layers))))
    image = _heatmap(ax, values, trace.column_labels(), trace.kinds, trace.layers, trace.stack, value)
    fig.colorbar(image, ax=ax, pad=0.01, label=LABELS[value])
    ax.set_title(title or f"causal tracing, audio corrupted ({trace.corruption}) · score {trace.measure}\n"
                          f"clean {trace.clean:.2f}, corrupted {trace.corrupt:.2f}", loc="left", fontsize=8)
    return fig


@publication_style()
def plot_causal_trace_many(many: Any, *, value: str = "recovery", title: str | None = None) -> Figure:
    """A `CausalTraceMany`: left, the mean of `value` per cell over the clips; right, the mean along
    the columns with its bootstrap 95 % CI as a band, one line per layer."""
    summary = many.summary(value)
    first = many.traces[0]
    columns, layers = list(first.columns), first.layers
    mean = summary.pivot(index="layer", columns="column", values="mean").reindex(index=list(layers), columns=columns)
    fig = Figure(figsize=(max(10.0, 3.0 + 1.1 * len(columns)), max(3.2, 1.6 + 0.34 * len(layers))))
    left, right = fig.subplots(1, 2, width_ratios=(1.1, 1.0))
    image = _heatmap(left, mean.to_numpy(float), columns, first.kinds, layers, first.stack, value)
    fig.colorbar(image, ax=left, pad=0.01, label=f"mean {LABELS[value]}")
    x = np.arange(len(columns))
    colours = [f"C{k % 10}" for k in range(len(layers))]
    for layer, colour in zip(layers, colours):
        rows = summary[summary["layer"] == layer].set_index("column").reindex(columns)
        right.plot(x, rows["mean"], marker="o", markersize=3, color=colour, label=f"layer {layer}")
        right.fill_between(x, rows["ci_low"], rows["ci_high"], color=colour, alpha=0.18, linewidth=0)
    right.axhline(0, color="0.7", linewidth=0.6)
    right.set_xticks(x, columns, rotation=40, ha="right")
    right.set(xlabel="positions restored", ylabel=LABELS[value], xlim=(-0.3, len(columns) - 0.7))
    right.legend(loc="best", frameon=False)
    n = len(many.traces)
    fig.suptitle(title or f"causal tracing over {n} clip{'s' if n != 1 else ''}, audio corrupted "
                          f"({first.corruption}) · mean and bootstrap 95 % CI", fontsize=9)
    return fig
