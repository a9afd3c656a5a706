"""Figures of captum attributions (`TagAttribution`, `AudioAttribution` of
`workbench.analysis.attribution`, read through their fields): bars per tag slot, and per-token
scores as a strip under the clip's mel."""
from __future__ import annotations

from typing import Any

import numpy as np
from matplotlib.figure import Figure

from workbench.audio import SECONDS_PER_TOKEN
from workbench.figures.clip import plot_mel
from workbench.figures.style import CMAP_DIVERGING, publication_style


@publication_style()
def plot_tag_attribution(result: Any) -> Figure:
    """Horizontal bars: one group per slot (labelled with its tags), one bar per method."""
    fig = Figure(figsize=(7.0, 1.2 + 0.45 * len(result.slots)))
    ax = fig.add_subplot()
    y = np.arange(len(result.slots))
    height = 0.8 / len(result.scores)
    for m, (method, scores) in enumerate(result.scores.items()):
        ax.barh(y + (m - (len(result.scores) - 1) / 2) * height, scores, height=height, label=method)
    ax.set_yticks(y, [f"{slot}  {text}" for slot, text in result.slots])
    ax.invert_yaxis()
    ax.axvline(0, color="0.3", linewidth=0.8)
    absent = ", ".join(sorted({b if b == "drop" else "replace" for b in result.baselines.values()}))
    ax.set(xlabel="attribution to log p(target) (nats)",
           title=f"tag slots → {_short(result.target)} (absent = {absent}; log p = {result.logprob:.3g})")
    ax.legend(frameon=False)
    return fig


@publication_style()
def plot_audio_attribution(result: Any) -> Figure:
    """The clip's mel (plot_mel) with the per-token scores as a strip under
    it, both against seconds on one shared axis."""
    fig = Figure(figsize=(9.0, 4.2))
    mel_ax, strip_ax = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    plot_mel(result.mel, result.n_samples, ax=mel_ax)
    mel_ax.set_xlabel("")
    limit = float(np.abs(result.scores).max()) or 1.0
    image = strip_ax.imshow(result.scores[None], cmap=CMAP_DIVERGING, vmin=-limit, vmax=limit, aspect="auto",
                            extent=(0, len(result.scores) * SECONDS_PER_TOKEN, 0, 1))
    fig.colorbar(image, ax=strip_ax, pad=0.01, label="nats")
    strip_ax.set_yticks([])
    what = f"occlusion of {result.window * SECONDS_PER_TOKEN * 1000:.0f} ms windows" \
        if result.method == "occlusion" else "integrated gradients"
    strip_ax.set(xlabel="time (s)", title=f"{what} ({result.fill}) → {_short(result.target)}")
    return fig


def _short(text: str, limit: int = 40) -> str:
    return repr(text) if len(text) <= limit else repr(text[:limit - 1] + "…")
