"""Figure of direct logit attribution (`DLAResult` of `workbench.analysis.dla`, read through its
fields): each layer's attention and MLP share of the target logit as bars, and each head's as a
layer × head heatmap."""
from __future__ import annotations

from typing import Any

import numpy as np
from matplotlib.colors import TwoSlopeNorm
from matplotlib.figure import Figure

from workbench.figures.style import CMAP_DIVERGING, GROUP_COLORS, LINE_COLOR, publication_style


@publication_style()
def plot_dla(result: Any, *, position: int | None = None, title: str | None = None) -> Figure:
    """Left: bars per layer, attention (and Whisper's cross-attention) beside the MLP, after a bar for
    the embedding. Right: layer × head heatmap (self-attention heads; cross-attention heads below when
    there are any). `position`: index into the result's positions; None: the mean over them."""
    n = len(result.positions)
    if position is not None and not -n <= position < n:
        raise ValueError(f"position={position}: the result holds {n} positions (0…{n - 1}, or negative from the end)")

    def pick(values: np.ndarray | None) -> np.ndarray | None:
        if values is None:
            return None
        return values[position] if position is not None else values.mean(axis=0)

    parts = [("attention", pick(result.attn), LINE_COLOR)]
    if result.cross is not None:
        parts.append(("cross-attention", pick(result.cross), GROUP_COLORS["audio"]))
    parts.append(("MLP", pick(result.mlp), GROUP_COLORS["tags"]))
    heads = pick(result.heads)
    cross_heads = pick(result.cross_heads)
    n_layers, n_heads = heads.shape
    fig = Figure(figsize=(10.0, max(3.0, 1.8 + 0.3 * n_layers * (2 if cross_heads is not None else 1))))
    left, right = fig.subplots(1, 2, width_ratios=(1.3, 1.0))
    width = 0.8 / len(parts)
    x = np.arange(n_layers)
    left.bar([-1.0], [float(pick(result.embed))], width=0.5, color="0.55", label="embedding")
    for k, (name, values, color) in enumerate(parts):
        left.bar(x + (k - (len(parts) - 1) / 2) * width, values, width=width, color=color, label=name)
    left.axhline(0, color="0.3", linewidth=0.8)
    left.set_xticks(np.arange(-1, n_layers), ["emb"] + [str(i) for i in range(n_layers)])
    left.set(xlabel=f"{result.stack} layer", ylabel=f"direct share of the {result.measure}")
    left.legend(frameon=False, fontsize=7)
    matrix = heads if cross_heads is None else np.concatenate([heads, cross_heads])
    limit = max(float(np.abs(matrix).max()), 1e-12)
    image = right.imshow(matrix, cmap=CMAP_DIVERGING, aspect="auto", norm=TwoSlopeNorm(0.0, -limit, limit))
    right.set_xticks(np.arange(n_heads))
    labels = [str(i) for i in range(n_layers)] + ([f"{i} cross" for i in range(n_layers)] if cross_heads is not None
                                                  else [])
    right.set_yticks(np.arange(len(labels)), labels)
    right.set(xlabel="head", ylabel="layer")
    fig.colorbar(image, ax=right, pad=0.01, label=result.measure)
    if title is None:
        if position is not None:
            where = f"at {result.labels[position]!r} → {result.targets[position]!r}"
        else:
            targets = sorted(set(result.targets))
            where = f"mean over {n} positions → " + (repr(targets[0]) if len(targets) == 1 else "each one's own target")
        total = pick(result.total)
        title = f"direct logit attribution {where} · components sum to {float(total):.3g}"
    fig.suptitle(title, x=0.01, ha="left", fontsize=8)
    return fig
