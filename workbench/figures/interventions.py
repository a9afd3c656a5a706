"""Figures of the interventions: activation patching and knockouts (`workbench.analysis.patching`,
`workbench.analysis.knockout`) and word alignment (`workbench.analysis.alignment`). Every function returns a
matplotlib `Figure`, drawn in the publication style.

These figures were the last section of `workbench.figures.attention`; its shared pieces (`plot_mel`, the axes
helpers, the group colours) stay there and are imported from it.
"""
from __future__ import annotations

import re
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.colors import TwoSlopeNorm
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from workbench.audio import SAMPLE_RATE
from workbench.figures.clip import plot_mel
from workbench.figures.style import (
    CMAP_ATTENTION,
    CMAP_DIVERGING,
    GROUP_COLORS,
    STRIP_COLOR,
    TALL,
    figure_and_axes,
    label_ticks,
    publication_style,
)

PATCH_VALUES = ("delta", "recovery", "score")
MAX_ANNOTATED_CELLS = 80    # heatmaps with more cells than this are not annotated (illegible)


@publication_style()
def plot_patching(result: Any, *, value: str = "delta", ax: Axes | None = None, title: str | None = None) -> Figure:
    """A `PatchingResult` as a heatmap, layer (rows, first layer on top) × column (position group
    or head). value: "delta" (score − the unpatched target's), "recovery" ((patched − target) /
    (source − target), patching only) or "score"; signed values on a diverging scale around 0."""
    if value not in PATCH_VALUES:
        raise ValueError(f"value={value!r}: choose one of {PATCH_VALUES}")
    values = {"delta": result.delta, "recovery": result.recovery, "score": result.scores}[value]
    if values is None:
        raise ValueError("value='recovery' needs a source score that differs from the target's (patching "
                         "results only): plot value='delta'")
    values = np.asarray(values, dtype=float)
    n_layers, n_columns = values.shape
    prompts = [_without_audio(prompt) for prompt in result.prompts]
    # the title shows the prompts in full; ~0.068 inch a character at 8 pt, plus the colour bar's margin
    width = max(6.0, 1.6 + 0.6 * n_columns, 2.0 + 0.068 * max(len(p) + 7 for p in prompts))
    fig, ax = figure_and_axes(ax, (width, max(2.8, 1.5 + 0.32 * n_layers)))
    if value == "score":
        image = ax.imshow(values, cmap=CMAP_ATTENTION, aspect="auto")
    else:
        limit = max(float(np.nanmax(np.abs(values))), 1e-12)
        image = ax.imshow(values, cmap=CMAP_DIVERGING, aspect="auto",
                          norm=TwoSlopeNorm(vcenter=0.0, vmin=-limit, vmax=limit))
    if values.size <= MAX_ANNOTATED_CELLS:
        for (i, j), v in np.ndenumerate(values):
            ax.text(j, i, "0" if abs(v) < 1e-6 else f"{v:.2g}", ha="center", va="center", fontsize=7,
                    color="white" if value != "score" and abs(v) > 0.6 * limit else "black")
    ax.set_xticks(np.arange(n_columns), list(result.columns), rotation=30 if n_columns > 6 else 0,
                  ha="right" if n_columns > 6 else "center")
    ax.set_yticks(np.arange(n_layers), [str(layer) for layer in result.layers])
    ax.set(xlabel="head" if result.columns[0].startswith("head") else "positions patched",
           ylabel=f"{result.stack} layer")
    label = {"delta": "Δ score", "recovery": "recovery (0 = target, 1 = source)", "score": "score"}[value]
    fig.colorbar(image, ax=ax, pad=0.01, label=label)
    if title is None:
        if result.kind.startswith("knockout"):
            lines = [f"{result.kind.split(':')[1]}-ablating one {result.stack} head at a time · score "
                     f"{result.measure}", f"prompt {prompts[0]}"]
        else:
            lines = [f"{'residual stream' if result.kind == 'resid' else 'head output'} patched source → target "
                     f"· score {result.measure}", f"source {prompts[0]}", f"target {prompts[1]}"]
        title = "\n".join(lines)
    ax.set_title(title, loc="left", fontsize=8)
    return fig


def _without_audio(prompt: str) -> str:
    """A prompt without its `<audio>PATH</audio>` references (the clip is not news in a title)."""
    return re.sub(r"<audio>.*?</audio>", "", prompt)


@publication_style()
def plot_word_alignment(alignment: Any, *, title: str | None = None) -> Figure:
    """Word timestamps (`workbench.analysis.alignment.Alignment`): the words as bands over the clip's mel,
    and below it the normalised attention (text token × time) with the DTW path, seconds on both."""
    fig = Figure(figsize=TALL)
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=(3, 2))
    plot_mel(alignment.mel, n_samples=alignment.n_samples, ax=top, token_grid=False)
    n_mels = alignment.mel.shape[0]
    for k, word in enumerate(alignment.words):
        top.axvspan(word.start, word.end, ymin=0.86, ymax=1.0, color=GROUP_COLORS["text"] if k % 2 else
                    GROUP_COLORS["tags"], alpha=0.85, linewidth=0)
        top.axvline(word.start, color="white", linewidth=0.6, alpha=0.8)
        top.text((word.start + word.end) / 2, n_mels * 0.93, word.word, ha="center", va="center", fontsize=7,
                 color="black", clip_on=True)
    top.set_xlabel("")
    text = alignment.text.strip()
    text = text if len(text) <= 70 else text[:69] + "…"
    top.set_title(title or f"word timestamps from {len(alignment.heads)} heads · “{text}”", fontsize=9)
    matrix = alignment.matrix
    span_s = matrix.shape[1] * alignment.step_s
    image = bottom.imshow(matrix, aspect="auto", cmap=CMAP_ATTENTION, interpolation="nearest",
                          extent=(0, span_s, matrix.shape[0] - 0.5, -0.5))
    fig.colorbar(image, ax=bottom, pad=0.01, label="z-scored attention")
    path = alignment.path
    bottom.plot((path[:, 1] + 0.5) * alignment.step_s, path[:, 0], color=STRIP_COLOR, linewidth=1.0)
    label_ticks(bottom.set_yticks, np.array(alignment.rows), at_most=18)
    bottom.set(xlim=(0, alignment.n_samples / SAMPLE_RATE), xlabel="time (s)", ylabel="text token")
    return fig


@publication_style()
def plot_head_ranking(ranking: Any, *, top: int = 6, ax: Axes | None = None, title: str | None = None) -> Figure:
    """A `workbench.analysis.alignment.HeadRanking`: layer × head heatmap of each head's mean word-start error
    (seconds; brighter = smaller error), the `top` best heads outlined and numbered by rank."""
    errors = np.asarray(ranking.errors, dtype=float)
    fig, ax = figure_and_axes(ax, (max(4.0, 1.5 + 0.45 * errors.shape[1]), max(2.6, 1.2 + 0.35 * errors.shape[0])))
    image = ax.imshow(errors, cmap=f"{CMAP_ATTENTION}_r", aspect="auto")
    fig.colorbar(image, ax=ax, pad=0.01, label="mean |word start error| (s)")
    for rank, (layer, head) in enumerate(ranking.top(min(top, errors.size)), start=1):
        ax.add_patch(Rectangle((head - 0.5, layer - 0.5), 1, 1, fill=False, edgecolor=STRIP_COLOR, linewidth=1.5))
        ax.text(head, layer, str(rank), ha="center", va="center", fontsize=7, color="black")
    ax.set_xticks(np.arange(errors.shape[1]))
    ax.set_yticks(np.arange(errors.shape[0]))
    ax.set(xlabel="head", ylabel="layer")
    where = "cross-attention" if ranking.attention == "cross" else "self-attention to the audio"
    ax.set_title(title or f"alignment heads: each head's {where} alone vs {len(ranking.words)} known word starts",
                 fontsize=9)
    return fig
