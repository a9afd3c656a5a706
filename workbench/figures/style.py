"""One publication style for every workbench figure.

    from workbench.figures.style import use_style
    use_style()                      # for the whole session (a notebook's first cell)
    with publication_style(): ...    # or just for a block; every figure function wraps itself in it

Rendering must be byte-deterministic so that `scripts/run_notebooks.py` writes the same PNGs on
every run: the fonts are matplotlib's bundled DejaVu, SVG ids use a fixed salt, and
`save_figure` strips the date and version metadata that SVG and PDF would otherwise embed.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, ContextManager

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

# Figure sizes in inches: a full-width strip for time series, a taller panel, a square heatmap.
WIDE = (9.0, 3.0)
TALL = (9.0, 5.0)
SQUARE = (5.0, 4.5)

CMAP_MEL = "magma"          # perceptually uniform, dark = quiet
CMAP_ATTENTION = "viridis"  # non-negative weights
CMAP_DIVERGING = "RdBu_r"   # signed attributions, centred on zero

GRID_COLOR = "white"        # audio-token grid drawn over a spectrogram
PADDING_COLOR = "0.55"      # shade over zero-padding after a clip's real end
LINE_COLOR = "#1f4e79"
STRIP_COLOR = "#c0392b"    # a strip of weights under a spectrogram, a DTW path
GROUP_COLORS = {"audio": "#1f77b4", "tags": "#ff7f0e", "text": "#2ca02c"}   # the position groups

STYLE: dict[str, Any] = {
    "figure.figsize": WIDE,
    "figure.dpi": 100,               # what a notebook shows (the inline backend renders at this)
    "savefig.dpi": 200,              # what save_figure writes
    "figure.constrained_layout.use": True,
    "figure.facecolor": "white",
    "savefig.facecolor": "white",
    "font.family": "DejaVu Sans",    # bundled with matplotlib: the same glyphs on every machine
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "legend.fontsize": 8,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.linewidth": 0.8,
    "lines.linewidth": 1.0,
    "image.cmap": CMAP_ATTENTION,
    "image.interpolation": "nearest",  # a bin is a bin: never smooth mel frames or attention cells
    "svg.hashsalt": "workbench",       # fixed ids in SVG output
    "svg.fonttype": "path",
    "pdf.fonttype": 42,
}

# No creation date, no library versions: the same figure gives the same file.
_NO_METADATA = {
    "png": {"Software": None},
    "svg": {"Date": None, "Creator": None},
    "pdf": {"CreationDate": None, "Creator": None, "Producer": None},
}


def publication_style() -> ContextManager:
    """The style for a `with` block, or as a decorator: `@publication_style()`."""
    return matplotlib.rc_context(STYLE)


def use_style() -> None:
    """Apply the style to everything drawn from now on in this process."""
    matplotlib.rcParams.update(STYLE)


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Write `fig` (format from the suffix: png, svg, pdf) without dates or version stamps."""
    path = Path(path)
    fmt = path.suffix.lstrip(".").lower()
    if fmt not in _NO_METADATA:
        raise ValueError(f"cannot save a figure as {path.name!r}: use a .png, .svg or .pdf suffix")
    with publication_style():
        fig.savefig(path, format=fmt, metadata=_NO_METADATA[fmt])
    return path


# Set by scripts/run_notebooks.py (`make figures`): where a notebook's figures go and under which name.
FIGURES_DIR_ENV = "WORKBENCH_FIGURES_DIR"
NOTEBOOK_ENV = "WORKBENCH_NOTEBOOK"


def save_notebook_figure(fig: Figure, name: str, *, notebook: str | None = None,
                         figures_dir: str | Path | None = None) -> Figure:
    """Keep a notebook figure as `figures/<notebook>/<name>.png` and `.pdf`; returns `fig` for display.

    Names say what a figure shows (`wer_by_length`, not `cell22`), so inserting a cell renames
    nothing. Run by hand (no notebook or folder known) it only returns the figure.
    """
    if not name or not all(c.isalnum() or c in "_-" for c in name):
        raise ValueError(f"figure name {name!r}: use letters, digits, '_' and '-' (it becomes a file name)")
    notebook = notebook or os.environ.get(NOTEBOOK_ENV)
    figures_dir = figures_dir or os.environ.get(FIGURES_DIR_ENV)
    if notebook and figures_dir:
        folder = Path(figures_dir) / notebook
        folder.mkdir(parents=True, exist_ok=True)
        for suffix in (".png", ".pdf"):
            save_figure(fig, folder / f"{name}{suffix}")
    return fig


def figure_and_axes(ax: Axes | None, size: tuple[float, float] = WIDE) -> tuple[Figure, Axes]:
    """Draw into `ax` (a panel of the caller's figure), or into a new figure of `size`."""
    if ax is not None:
        return ax.figure, ax
    fig = Figure(figsize=size)
    return fig, fig.add_subplot()


def label_ticks(set_ticks: Any, labels: np.ndarray, at_most: int = 40) -> None:
    """Token labels as ticks, at most `at_most` of them (every Nth), each cut to 16 characters."""
    step = max(1, math.ceil(len(labels) / at_most))
    ticks = np.arange(0, len(labels), step)
    set_ticks(ticks, [repr(str(labels[t]))[1:-1][:16] for t in ticks], fontsize=6)
