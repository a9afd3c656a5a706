"""Training curves of a recipe's log (one JSON record a step: stage, step, loss, and now and then
validation_loss), one panel per stage, so a stage's start from its predecessor's weights shows.

    records = [json.loads(line) for line in open("workbench/assets/nano_v2/train_log.jsonl")]
    plot_training_curves(records)
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from matplotlib.figure import Figure

from workbench.figures.style import LINE_COLOR, STRIP_COLOR, WIDE, publication_style

__all__ = ["plot_training_curves"]


@publication_style()
def plot_training_curves(records: Sequence[dict[str, Any]], *, smooth: int = 25) -> Figure:
    """Loss per step (running mean over `smooth` steps) and validation loss, a panel per stage."""
    # A resumed stage repeats the steps after its last saved state: the later record of a step wins.
    records = list({(r["stage"], r["step"]): r for r in records}.values())
    stages = list(dict.fromkeys(r["stage"] for r in records))
    if not stages:
        raise ValueError("the training log has no records: was the recipe run (train_log.jsonl empty)?")
    fig = Figure(figsize=(WIDE[0], 2.6))
    axes = fig.subplots(1, len(stages), squeeze=False)[0]
    for ax, stage in zip(axes, stages):
        rows = sorted((r for r in records if r["stage"] == stage), key=lambda r: r["step"])
        steps = np.array([r["step"] for r in rows])
        loss = np.array([r["loss"] for r in rows], dtype=float)
        width = max(1, min(smooth, len(loss)))
        running = np.convolve(loss, np.ones(width) / width, mode="valid")
        ax.plot(steps, loss, color=LINE_COLOR, alpha=0.25, lw=0.6)
        ax.plot(steps[width - 1:], running, color=LINE_COLOR, label="train (running mean)")
        checked = [r for r in rows if "validation_loss" in r]
        if checked:
            ax.plot([r["step"] for r in checked], [r["validation_loss"] for r in checked], "o-",
                    color=STRIP_COLOR, ms=3, label="held-out")
        minutes = rows[-1].get("seconds", 0) / 60
        ax.set_title(f"{stage}: {len(rows)} steps, {minutes:.0f} min")
        ax.set_xlabel("step")
    axes[0].set_ylabel("cross-entropy (nats / target token)")
    axes[0].legend(loc="upper right")
    return fig
