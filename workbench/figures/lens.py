"""The logit lens at every audio token: layer × time (s), one clip.

Each cell is what the LLM's residual stream at that 40 ms slice of the clip, read through the final
norm and the unembedding, gives a token: the top token's probability, or a chosen target's. The top
token of the last layer is written above the map where there is room for it.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from workbench.figures.style import figure_and_axes


def plot_audio_lens(result: Any, *, target: str | int | None = None, audio: int = 0, ax: Axes | None = None,
                    title: str | None = None, labels: int = 24) -> Figure:
    """`result`: an `AudioLensResult`. target: None (the top token's probability), a target's token
    text or its index in `result.targets`. labels: at most this many top tokens written on top."""
    keep = np.flatnonzero(result.audio == audio)
    if keep.size == 0:
        raise ValueError(f"audio={audio}: the result has audio tokens of audio(s) {sorted(set(result.audio.tolist()))}")
    if target is None:
        values, what = result.top_probs[:, keep, 0], "p(top token)"
    else:
        tokens = [t.token for t in result.targets]
        j = target if isinstance(target, int) and not isinstance(target, bool) else (
            tokens.index(target) if target in tokens else None)
        if j is None or not 0 <= j < len(tokens):
            raise ValueError(f"target={target!r} is not one of the result's targets {tokens}: pass it to "
                             "logit_lens(targets=[…]) first")
        values, what = result.probs[:, keep, j], f"p({tokens[j]!r})"
    fig, ax = figure_and_axes(ax, (9.0, 0.5 + 0.35 * len(result.layers)))
    start = float(result.start_s[keep[0]])
    end = float(result.start_s[keep[-1]]) + result.step_s
    image = ax.imshow(values, aspect="auto", origin="lower", interpolation="nearest", cmap="magma", vmin=0,
                      vmax=max(float(values.max()), 1e-6), extent=(start, end, -0.5, len(result.layers) - 0.5))
    ax.set_yticks(np.arange(len(result.layers)), result.layers)
    ax.set(xlabel="time (s)", ylabel="layer")
    fig.colorbar(image, ax=ax, label=what, pad=0.01)
    step = max(1, int(np.ceil(keep.size / labels)))
    for i in range(0, keep.size, step):   # the last layer's top token, every `step` audio tokens
        ax.annotate(repr(result.top_tokens[-1][keep[i]][0])[1:-1][:10], (result.start_s[keep[i]] + result.step_s / 2, 1.0),
                    xycoords=ax.get_xaxis_transform(), textcoords="offset points", xytext=(0, 2), rotation=60,
                    ha="left", va="bottom", fontsize=6)
    ax.set_title(title or f"logit lens over audio {audio}: {what} per layer and {result.step_s * 1000:.0f} ms token", pad=36)
    return fig
