"""Figures of the per-task notebooks (`notebooks/10_asr` … `19_chat`): one kind of figure per benchmark family.

Every function returns a matplotlib `Figure` built without pyplot (nothing global is kept; a notebook
shows it when a cell returns it), drawn in the workbench style; the ones with one panel take `ax=`.
Inputs are plain lists, arrays or DataFrames that the evaluation records already hold, so the figures
know nothing of models or scorers:

| figure | task family | function |
|---|---|---|
| confusion matrix, a count in every cell, outputs outside the labels in "(other)" | ASC, SER, VSC | `plot_confusion` |
| edit errors against reference length, with the 100 % line | ASR | `plot_errors_by_length` |
| histogram with reference lines (paper, previous best) | SRWT shifts, MNA pitch errors | `plot_histogram` |
| grouped bars with their values written on | S2TT BLEU per pair, AQA yes/no vs open | `plot_bars` |
| generated captions beside their references, with a per-clip score | AAC | `plot_captions` |
| labelled time spans (words, grounding answers) under the clip's log-mel | SRWT, chat | `plot_spans_on_mel` (`spans_table`) |
| a grounding answer's segments shaded on the log-mel, beside the truth | chat | `plot_grounding` |

Time axes are in seconds (10 ms a mel frame). Labels the style's font cannot draw (the bundled DejaVu
Sans has no CJK glyphs) are written as `#k`, their place in the row (`spans_table` lists what each stands
for); in running text (captions) such a character becomes `MISSING_GLYPH`, so no figure warns about glyphs.
"""
from __future__ import annotations

import math
import textwrap
from functools import lru_cache
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib import font_manager
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ft2font import FT2Font
from matplotlib.patches import Rectangle
from matplotlib.ticker import MaxNLocator

from workbench.figures.style import CMAP_MEL, LINE_COLOR, SQUARE, STYLE, WIDE, publication_style
from workbench.tags import Segment, grounding_segments

OTHER = "(other)"              # the confusion-matrix column for outputs outside the label set
MEL_SECONDS_PER_FRAME = 0.01   # 160 samples at 16 kHz
SPAN_GID = "span"              # gid of every span rectangle, for tests and later styling
BACKWARDS_COLOR = "#c0392b"    # a span whose end comes before its start
MISSING_GLYPH = "\u25af"        # ▯, for a character the font has no glyph for (in running text)
MARK_COLORS = ("C1", "C7", "C2", "C4")
BAR_COLORS = ("C0", "C1", "C7", "C2", "C4", "C5")   # ours, paper, previous best, … (as EvalResult.plot)


# ---------------------------------------------------------------------------------------------
# Labels: confusion matrix

def confusion_counts(references: Sequence[str], outputs: Sequence[str],
                     labels: Sequence[str] | None = None) -> pd.DataFrame:
    """Counts with one row per reference label and one column per output label (same order), plus
    an `OTHER` column when some output is not a label. `labels` default: the sorted references."""
    references, outputs = [str(r) for r in references], [str(o) for o in outputs]
    if len(references) != len(outputs):
        raise ValueError(f"{len(references)} references for {len(outputs)} outputs: give one output per reference")
    if not references:
        raise ValueError("no items: a confusion matrix needs at least one (reference, output) pair")
    labels = list(dict.fromkeys(labels)) if labels is not None else sorted(set(references))
    unknown = sorted(set(references) - set(labels))
    if unknown:
        raise ValueError(f"references {unknown} are not in labels {labels}: add them to labels")
    columns = labels + ([OTHER] if any(o not in labels for o in outputs) else [])
    counts = pd.DataFrame(0, index=pd.Index(labels, name="reference"), columns=pd.Index(columns, name="output"))
    for reference, output in zip(references, outputs):
        counts.loc[reference, output if output in labels else OTHER] += 1
    return counts


@publication_style()
def plot_confusion(references: Sequence[str], outputs: Sequence[str], labels: Sequence[str] | None = None, *,
                   title: str | None = None, ax: Axes | None = None) -> Figure:
    """The confusion matrix of `confusion_counts`: rows are the true labels, columns what the model
    said; the diagonal is correct. Every cell carries its count."""
    counts = confusion_counts(references, outputs, labels)
    rows, columns = counts.shape
    fig, ax = _figure_and_axes(ax, (max(3.2, 0.75 * columns + 1.8), max(2.6, 0.55 * rows + 1.4)))
    values = counts.to_numpy()
    image = ax.imshow(values, cmap="Blues", vmin=0, vmax=max(1, int(values.max())), aspect="auto")
    for (i, j), count in np.ndenumerate(values):
        dark = count > 0.6 * max(1, values.max())
        ax.text(j, i, str(count), ha="center", va="center", color="white" if dark else "0.15",
                fontweight="bold" if i == j else "normal")
    ax.set_xticks(range(columns), [_drawable(c, f"#{k + 1}") for k, c in enumerate(counts.columns)],
                  rotation=30, ha="right")
    ax.set_yticks(range(rows), [_drawable(r, f"#{k + 1}") for k, r in enumerate(counts.index)])
    ax.set(xlabel="model output", ylabel="reference")
    ax.spines[["top", "right"]].set_visible(True)
    colorbar = fig.colorbar(image, ax=ax, pad=0.02, label="items")
    colorbar.ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    correct = sum(values[i, i] for i in range(min(rows, columns)))
    ax.set_title(title or f"confusion matrix · {correct}/{values.sum()} correct")
    return fig


# ---------------------------------------------------------------------------------------------
# ASR: errors against length

@publication_style()
def plot_errors_by_length(lengths: Sequence[int], errors: Sequence[int], *, labels: Sequence[str] | None = None,
                          label_above: float = 1.0, unit: str = "words", title: str | None = None,
                          ax: Axes | None = None) -> Figure:
    """One point per utterance: reference length (x) against edit errors (y). The dashed diagonal is
    100 % error rate (as many errors as reference tokens: points above it inserted more than the
    reference holds); the solid line is the corpus rate Σ errors / Σ length, the number a WER reports.
    `labels` name the points whose error rate is at least `label_above` (the ones worth a look)."""
    lengths, errors = np.asarray(lengths, dtype=float), np.asarray(errors, dtype=float)
    if lengths.shape != errors.shape or lengths.ndim != 1 or lengths.size == 0:
        raise ValueError(f"lengths {lengths.shape} and errors {errors.shape}: give two equally long, non-empty lists")
    if labels is not None and len(labels) != lengths.size:
        raise ValueError(f"{len(labels)} labels for {lengths.size} points")
    fig, ax = _figure_and_axes(ax, (6.0, 3.6))
    right, top = max(lengths.max(), 1.0) * 1.1, max(errors.max(), 1.0) * 1.15
    reach = max(right, top)
    ax.plot([0, reach], [0, reach], "--", color="0.6", linewidth=0.8, label="100 % (errors = length)")
    rate = errors.sum() / lengths.sum() if lengths.sum() else math.nan
    if np.isfinite(rate):
        ax.plot([0, reach], [0, rate * reach], color="C1", linewidth=1.0, label=f"corpus rate {100 * rate:.1f} %")
    ax.scatter(lengths, errors, color=LINE_COLOR, zorder=3, s=22)
    for x, y, text in zip(lengths, errors, labels or []):
        if x > 0 and y / x >= label_above:
            ax.annotate(_drawable(str(text), ""), (x, y), xytext=(4, -3), textcoords="offset points", fontsize=7,
                        color="0.3", va="top")
    ax.set(xlim=(0, right), ylim=(0, top), xlabel=f"reference length ({unit})", ylabel=f"edit errors ({unit})")
    ax.legend(loc="best", frameon=False)
    ax.set_title(title or f"errors against length · {lengths.size} utterances")
    return fig


# ---------------------------------------------------------------------------------------------
# Distributions and bars

@publication_style()
def plot_histogram(values: Sequence[float], *, bins: int | Sequence[float] = 10, xlabel: str = "",
                   marks: Mapping[str, float] | None = None, title: str | None = None,
                   ax: Axes | None = None) -> Figure:
    """A histogram of `values` (NaN and None left out, and counted in the title) with a dashed
    vertical line and its name for each of `marks` (e.g. {"Qwen-Audio (paper) 51.5 ms": 51.5})."""
    raw = [np.nan if v is None else float(v) for v in values]
    finite = np.asarray([v for v in raw if np.isfinite(v)])
    fig, ax = _figure_and_axes(ax, (6.0, 3.0))
    if finite.size:
        counts, _, _ = ax.hist(finite, bins=bins, color=LINE_COLOR, edgecolor="white", linewidth=0.6)
        if marks:   # head room above the bars for the legend
            ax.set_ylim(0, max(1.0, float(np.max(counts))) * (1.25 + 0.12 * len(marks)))
    else:
        ax.text(0.5, 0.5, "no values to show", transform=ax.transAxes, ha="center", va="center", color="0.4")
    for k, (name, x) in enumerate((marks or {}).items()):
        ax.axvline(x, color=MARK_COLORS[k % len(MARK_COLORS)], linestyle="--", linewidth=1.2, label=name)
    if marks:
        ax.legend(frameon=False, fontsize=7, loc="upper right")
    ax.set(xlabel=xlabel, ylabel="count")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))   # counts are whole numbers
    left_out = len(raw) - finite.size
    outside = (int(((finite < bins[0]) | (finite > bins[-1])).sum())
               if not isinstance(bins, int) and len(bins) and finite.size else 0)
    notes = [f"{left_out} without a value left out"] * bool(left_out) + [f"{outside} outside the bins"] * bool(outside)
    ax.set_title(title or f"{finite.size} values")
    if notes:
        ax.set_title(f"{ax.get_title()} ({'; '.join(notes)})")
    return fig


@publication_style()
def plot_bars(table: pd.DataFrame | Mapping[str, float], *, ylabel: str = "", title: str | None = None,
              fmt: str = "{:.3g}", colors: Mapping[str, str] | None = None, ax: Axes | None = None) -> Figure:
    """Grouped bars: one group per row of `table` (its index on the x axis), one bar per column
    (the legend), each with its value written on; a missing value (None/NaN) is a "—" with no bar.
    A mapping {name: value} is one series. `colors`: {column: colour}, others from BAR_COLORS."""
    frame = (pd.DataFrame({"value": pd.Series(table, dtype=float)}) if isinstance(table, Mapping)
             else pd.DataFrame(table).astype(float))
    if frame.empty:
        raise ValueError("the table is empty: give at least one row and one column")
    n_groups, n_series = frame.shape
    fig, ax = _figure_and_axes(ax, (min(WIDE[0], max(4.0, 0.9 * n_groups * n_series ** 0.5 + 2.0)), 3.2))
    width = 0.8 / n_series
    for s, column in enumerate(frame.columns):
        x = np.arange(n_groups) - 0.4 + width * (s + 0.5)
        heights = frame[column].to_numpy()
        drawn = np.where(np.isfinite(heights), heights, 0.0)
        color = (colors or {}).get(column, BAR_COLORS[s % len(BAR_COLORS)])
        bars = ax.bar(x, drawn, width * 0.92, label=str(column), color=color)
        for rect, value in zip(bars, heights):
            text = fmt.format(value) if np.isfinite(value) else "—"
            ax.annotate(text, (rect.get_x() + rect.get_width() / 2, rect.get_height()), xytext=(0, 2),
                        textcoords="offset points", ha="center", va="bottom", fontsize=7)
    ax.set_xticks(range(n_groups), [str(i) for i in frame.index])
    top = np.nanmax(frame.to_numpy()) if np.isfinite(frame.to_numpy()).any() else 1.0
    ax.set(ylabel=ylabel, ylim=(0, max(top, 1e-9) * 1.18))
    if n_series > 1 or not isinstance(table, Mapping):
        ax.legend(frameon=False, fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    if title:
        ax.set_title(title)
    return fig


# ---------------------------------------------------------------------------------------------
# AAC: captions beside references

@publication_style()
def plot_captions(outputs: Sequence[str], references: Sequence[Sequence[str]], scores: Sequence[float] | None = None,
                  *, names: Sequence[str] | None = None, score_label: str = "sentence BLEU", n_references: int = 2,
                  title: str | None = None) -> Figure:
    """One row per clip: the generated caption (bold) over its first `n_references` references (grey),
    and, with `scores`, a bar of the per-clip score on the right."""
    if len(outputs) != len(references) or (scores is not None and len(scores) != len(outputs)):
        raise ValueError(f"{len(outputs)} outputs, {len(references)} reference lists"
                         + (f", {len(scores)} scores" if scores is not None else "") + ": give one of each per clip")
    if not outputs:
        raise ValueError("no captions to show")
    n = len(outputs)
    fig = Figure(figsize=(9.0, 0.2 + 0.62 * n * (1 + 0.35 * n_references)))
    grid = fig.add_gridspec(1, 2 if scores is not None else 1, width_ratios=[5, 1] if scores is not None else [1])
    text_ax = fig.add_subplot(grid[0, 0])
    text_ax.set_axis_off()
    text_ax.set(xlim=(0, 1), ylim=(n - 0.5, -0.5))
    for i, (output, refs) in enumerate(zip(outputs, references)):
        head = f"{names[i]}: " if names is not None else ""
        text_ax.text(0.0, i - 0.42, _printable(textwrap.shorten(head + "“" + output + "”", 110)), fontweight="bold",
                     color=LINE_COLOR, va="top", fontsize=8)
        for k, ref in enumerate(list(refs)[:n_references]):
            text_ax.text(0.02, i - 0.42 + (k + 1) * 0.8 / (n_references + 1), _printable(textwrap.shorten("ref: " + ref, 110)),
                         color="0.45", va="top", fontsize=7.5)
    if scores is not None:
        score_ax = fig.add_subplot(grid[0, 1])
        values = np.asarray([np.nan if s is None else float(s) for s in scores])
        score_ax.barh(np.arange(n), np.nan_to_num(values), color="C1", height=0.5)
        for i, value in enumerate(values):
            score_ax.annotate("—" if not np.isfinite(value) else f"{value:.3g}", (np.nan_to_num(value), i),
                              xytext=(2, 0), textcoords="offset points", va="center", fontsize=7)
        top = np.nanmax(values) if np.isfinite(values).any() else 1.0
        score_ax.set(ylim=(n - 0.5, -0.5), xlim=(0, max(top, 1e-9) * 1.35), yticks=[], xlabel=score_label)
    fig.suptitle(title or f"{n} generated captions and their references")
    return fig


# ---------------------------------------------------------------------------------------------
# Time spans under a log-mel (word timestamps, grounding answers)

Span = tuple[str, float, float]


def spans_table(rows: Mapping[str, Sequence[Span]]) -> pd.DataFrame:
    """Every span of `rows` with the text `plot_spans_on_mel` writes for it (its `#k` when the font
    cannot draw the label) and whether it runs backwards (end before start)."""
    records = [{"row": name, "k": k, "label": label, "start": float(start), "end": float(end),
                "drawn as": _drawable(label, f"#{k}"), "backwards": float(end) < float(start)}
               for name, spans in rows.items() for k, (label, start, end) in enumerate(spans, start=1)]
    return pd.DataFrame(records, columns=["row", "k", "label", "start", "end", "drawn as", "backwards"])


@publication_style()
def plot_spans_on_mel(mel: Any, rows: Mapping[str, Sequence[Span]], *, seconds: float | None = None,
                      title: str | None = None) -> Figure:
    """The log-mel `mel` (n_mels, frames of 10 ms), cropped to `seconds`, with one strip under it per
    entry of `rows` ({row name: [(label, start_s, end_s), …]}): a box from start to end holding its
    label. A span that ends before it starts (a model's times going backwards) is drawn red from end to
    start, hatched; spans past the clip are clipped by the axis. Shared x axis in seconds."""
    mel = _as_array(mel)
    if mel.ndim != 2:
        raise ValueError(f"mel has shape {mel.shape}: give (n_mels, frames)")
    n_frames = mel.shape[1] if seconds is None else min(mel.shape[1], int(round(seconds / MEL_SECONDS_PER_FRAME)))
    if n_frames < 1:
        raise ValueError(f"seconds={seconds!r} leaves no mel frame to draw")
    mel = mel[:, :n_frames]
    span_s = n_frames * MEL_SECONDS_PER_FRAME
    n_rows = len(rows)
    fig = Figure(figsize=(WIDE[0], 2.4 + 0.42 * n_rows))
    grid = fig.add_gridspec(1 + n_rows, 1, height_ratios=[5] + [1] * n_rows, hspace=0.05)
    mel_ax = fig.add_subplot(grid[0])
    mel_ax.imshow(mel, origin="lower", aspect="auto", cmap=CMAP_MEL, extent=(0, span_s, 0, mel.shape[0]))
    mel_ax.set(xlim=(0, span_s), ylabel="mel bin")
    mel_ax.tick_params(labelbottom=n_rows == 0)
    for r, (name, spans) in enumerate(rows.items()):
        ax = fig.add_subplot(grid[1 + r], sharex=mel_ax)
        ax.set(ylim=(0, 1), yticks=[0.5])
        ax.set_yticklabels([name], fontsize=7)
        ax.spines[["top", "right", "left"]].set_visible(False)
        ax.tick_params(axis="y", length=0, pad=2)
        ax.tick_params(labelbottom=r == n_rows - 1)
        for k, (label, start, end) in enumerate(spans, start=1):
            start, end = float(start), float(end)
            backwards = end < start
            left, width = min(start, end), abs(end - start)
            color = BACKWARDS_COLOR if backwards else f"C{r % 10}"
            ax.add_patch(Rectangle((left, 0.1), width, 0.8, facecolor=color, alpha=0.35 if not backwards else 0.25,
                                   edgecolor=color, linewidth=0.8, hatch="///" if backwards else None, gid=SPAN_GID))
            if left < span_s:
                ax.text(min(left + width / 2, span_s), 0.5, _drawable(label, f"#{k}"), ha="center", va="center",
                        fontsize=7, clip_on=True)
        if r == n_rows - 1:
            ax.set_xlabel("time (s)")
    fig.suptitle(title or f"log-mel · {span_s:.2f} s")
    return fig


@publication_style()
def plot_grounding(mel: Any, answer: str | Sequence[Segment], *, truth: Sequence[Segment] = (),
                   seconds: float | None = None, title: str | None = None) -> Figure:
    """A grounding answer on the clip's log-mel: each segment of `answer` (its text, read by
    `workbench.tags.grounding_segments`, or the segments) shaded on the mel and boxed with its text in
    a strip under it, beside the `truth` segments when given (`plot_spans_on_mel` draws the strips)."""
    segments = grounding_segments(answer) if isinstance(answer, str) else list(answer)
    rows = {"answer": [(s.text, s.start, s.end) for s in segments]}
    if truth:
        rows["truth"] = [(s.text, s.start, s.end) for s in truth]
    fig = plot_spans_on_mel(mel, rows, seconds=seconds, title=title or f"{len(segments)} grounded segment(s)")
    for s in segments:   # on the mel itself, where the answer says the phrase is
        color = BACKWARDS_COLOR if s.end < s.start else "C0"
        fig.axes[0].axvspan(min(s.start, s.end), max(s.start, s.end), color=color, alpha=0.25, gid=SPAN_GID)
    return fig


# ---------------------------------------------------------------------------------------------
# Shared pieces

def _figure_and_axes(ax: Axes | None, size: tuple[float, float] = SQUARE) -> tuple[Figure, Axes]:
    if ax is not None:
        return ax.figure, ax
    fig = Figure(figsize=size)
    return fig, fig.add_subplot()


def _as_array(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):          # a torch tensor, without importing torch here
        x = x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=float)


@lru_cache(maxsize=1)
def _charmap() -> frozenset[int]:
    path = font_manager.findfont(font_manager.FontProperties(family=STYLE["font.family"]))
    return frozenset(FT2Font(path).get_charmap())


def _printable(text: str) -> str:
    """`text` with every character the style's font cannot draw replaced by MISSING_GLYPH."""
    glyphs = _charmap()
    return "".join(c if ord(c) in glyphs or c.isspace() else MISSING_GLYPH for c in text)


def _drawable(text: str, fallback: str) -> str:
    """`text`, or `fallback` when the style's font has no glyph for one of its characters."""
    glyphs = _charmap()
    return text if all(ord(c) in glyphs or c.isspace() for c in text) else fallback
