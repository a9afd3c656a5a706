"""Figures of attention and of the logit lens, drawn from a `Trace` (`workbench.analysis.trace`).

The trace is read through its methods (`pattern`, `layers`, `row_index`, `audio_cols`) and fields:
nothing here imports the analysis layer, which imports these functions for `Trace.plot`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.colors import PowerNorm
from matplotlib.figure import Figure

from workbench.audio import SAMPLE_RATE, SECONDS_PER_TOKEN, encoder_frames, mel_frames
from workbench.figures.clip import plot_mel
from workbench.figures.style import (
    CMAP_ATTENTION,
    GROUP_COLORS,
    SQUARE,
    STRIP_COLOR,
    TALL,
    figure_and_axes,
    label_ticks,
    publication_style,
)

# ---------------------------------------------------------------------------------------------
# Attention and the logit lens, drawn from a `workbench.analysis.trace.Trace`
#
# Every time axis is in seconds: LLM audio tokens cover 40 ms, encoder frames (and Whisper's
# cross-attention keys) 20 ms. `heads` is None (the mean over the heads the trace kept), a list of
# head numbers, or "alignment" (Whisper: the (layer, head) pairs its generation config names).

TIME_MAP_MAX_ROWS = 80      # token × time maps with more query rows than this are refused (illegible)

@publication_style()
def plot_encoder_attention(trace: Any, layer: int, head: int | None = None, *, audio: int = 0,
                           crop: bool = True, ax: Axes | None = None, title: str | None = None) -> Figure:
    """Encoder self-attention of one block, one head or the mean over heads, query × key time in seconds.

    crop: Whisper's encoder always runs the 30 s window; keep the frames of the clip itself.
    Colour is √p so that the weaker off-diagonal structure stays visible next to the diagonal.
    """
    patterns = trace.pattern(layer, "encoder")
    if not 0 <= audio < len(patterns):
        raise ValueError(f"audio={audio}: the trace holds {len(patterns)} audio(s)")
    probs = _mean_heads(trace, patterns[audio], head)
    frames = probs.shape[-1]
    if crop:
        frames = min(frames, encoder_frames(trace.inputs.audios[audio].n_samples))
    probs = probs[:frames, :frames]
    span_s = frames * trace.frame_seconds
    fig, ax = figure_and_axes(ax, SQUARE)
    image = ax.imshow(probs, cmap=CMAP_ATTENTION, norm=PowerNorm(0.5, vmin=0), aspect="auto",
                      extent=(0, span_s, span_s, 0))
    fig.colorbar(image, ax=ax, pad=0.01, label="attention (√ scale)")
    ax.set(xlabel="key time (s)", ylabel="query time (s)")
    which = "mean over heads" if head is None else f"head {head}"
    ax.set_title(title or f"encoder layer {layer} · {which} · {trace.frame_seconds * 1000:.0f} ms frames")
    return fig


@publication_style()
def plot_audio_attention(trace: Any, query: Any = "last", *, layers: Sequence[int] | None = None,
                         heads: Any = None, audio: int = 0, title: str | None = None) -> Figure:
    """The attention of a query position (or the mean over several) over the audio, as a strip under
    the clip's mel on a shared time axis. Qwen-Audio: LLM self-attention over the audio tokens
    (40 ms bars); Whisper: decoder cross-attention over encoder frames (20 ms bars).
    layers: default every captured layer (averaged)."""
    weights, step_s, labels, what = _attention_over_time(trace, query, layers, heads, audio)
    span = trace.inputs.audios[audio]
    if span.mel is None:
        raise ValueError(f"audio {audio} of the trace carries no mel: rebuild the inputs with model.inputs()")
    fig = Figure(figsize=TALL)
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=(2, 1))
    plot_mel(span.mel[:, :mel_frames(span.n_samples)], n_samples=span.n_samples, ax=top,
             title=f"log-mel · {Path(span.source).name}")
    # One colour bar beside both panels, so that the two time axes have the same width.
    mel_image = top.images[0]
    mel_image.colorbar.remove()
    fig.colorbar(mel_image, ax=[top, bottom], pad=0.01, label="log-mel", shrink=0.6, anchor=(0, 1))
    strip = weights.mean(axis=0)
    bottom.bar(np.arange(len(strip)) * step_s, strip, width=step_s, align="edge", color=STRIP_COLOR,
               linewidth=0)
    bottom.set(xlim=(0, span.n_samples / SAMPLE_RATE), ylim=(0, max(float(strip.max()), 1e-12) * 1.05),
               xlabel="time (s)", ylabel="attention")
    top.set_xlabel("")
    query_text = repr(labels[0]) if len(labels) == 1 else f"mean of {len(labels)} queries"
    bottom.set_title(f"{query_text} → audio · {what}", fontsize=9)
    if title:
        fig.suptitle(title)
    return fig


@publication_style()
def plot_attention_over_time(trace: Any, rows: Any = "output", *, layers: Sequence[int] | None = None,
                             heads: Any = None, audio: int = 0, normalize: bool = True,
                             ax: Axes | None = None, title: str | None = None) -> Figure:
    """Token × time map: for each query row, where in the audio it attends (x in seconds).

    Qwen-Audio: LLM self-attention over the audio tokens; Whisper: decoder cross-attention over
    encoder frames, which follows the words when heads="alignment". normalize: scale each row to
    its maximum, so that rows with little attention on the audio stay readable.
    """
    weights, step_s, labels, what = _attention_over_time(trace, rows, layers, heads, audio)
    if len(labels) > TIME_MAP_MAX_ROWS:
        raise ValueError(f"{len(labels)} query rows: a token × time map shows at most {TIME_MAP_MAX_ROWS}; "
                         "pass rows= a smaller selection (e.g. 'output', or a list of positions)")
    if normalize:
        weights = weights / np.maximum(weights.max(axis=1, keepdims=True), 1e-12)
    span_s = trace.inputs.audios[audio].n_samples / SAMPLE_RATE
    fig, ax = figure_and_axes(ax, (9.0, max(2.5, 0.22 * len(labels) + 1.2)))
    image = ax.imshow(weights, cmap=CMAP_ATTENTION, aspect="auto", interpolation="nearest", vmin=0,
                      extent=(0, weights.shape[1] * step_s, len(labels) - 0.5, -0.5))
    fig.colorbar(image, ax=ax, pad=0.01, label="attention / row max" if normalize else "attention")
    ax.set(xlim=(0, span_s), xlabel="time (s)")
    ax.set_yticks(np.arange(len(labels)), [repr(label)[1:-1] for label in labels], fontsize=7)
    ax.set_title(title or f"where each token attends in time · {what}")
    return fig


@publication_style()
def plot_attention_mass(trace: Any, rows: Any = None, *, ax: Axes | None = None,
                        title: str | None = None) -> Figure:
    """Per layer, the share of attention on audio, tags and text (stacked bars), averaged over heads
    and the query rows chosen (default: every captured row)."""
    table = trace.attention_mass(rows)
    fig, ax = figure_and_axes(ax)
    bottom = np.zeros(len(table))
    for group in ("audio", "tags", "text"):
        ax.bar(table["layer"], table[group], bottom=bottom, color=GROUP_COLORS[group], label=group, width=0.8)
        bottom += table[group].to_numpy()
    ax.set(xlabel="layer", ylabel="share of attention", ylim=(0, 1.0))
    ax.set_xticks(table["layer"])
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    n_rows = len(trace.row_index(rows))
    ax.set_title(title or f"where attention goes, per layer · mean over heads and {n_rows} queries")
    return fig


@publication_style()
def plot_attention_pattern(trace: Any, layer: int, head: int | None = None, *, what: str = "self",
                           ax: Axes | None = None, title: str | None = None) -> Figure:
    """A captured pattern as a heatmap: query rows × key columns (token labels), or encoder frames
    (what="encoder", seconds) or Whisper cross-attention keys (what="cross", seconds)."""
    if what == "encoder":
        return plot_encoder_attention(trace, layer, head, ax=ax, title=title)
    probs = _mean_heads(trace, trace.pattern(layer, what), head)
    fig, ax = figure_and_axes(ax, SQUARE)
    row_labels = trace.positions["label"].to_numpy()[trace.rows]
    if what == "cross":   # Whisper's 30 s window: keep the clip's own frames
        probs = probs[:, :encoder_frames(trace.inputs.audios[0].n_samples)]
        span_s = probs.shape[1] * trace.frame_seconds
        image = ax.imshow(probs, cmap=CMAP_ATTENTION, aspect="auto", extent=(0, span_s, len(probs) - 0.5, -0.5))
        ax.set_xlabel("key time (s)")
    else:
        image = ax.imshow(probs, cmap=CMAP_ATTENTION, aspect="auto")
        label_ticks(ax.set_xticks, trace.positions["label"].to_numpy()[trace.cols])
        ax.set_xlabel("key position")
    label_ticks(ax.set_yticks, row_labels)
    fig.colorbar(image, ax=ax, pad=0.01, label="attention")
    which = "mean over heads" if head is None else f"head {head}"
    ax.set_title(title or f"{trace.sequence} layer {layer} {what}-attention · {which}")
    return fig


@publication_style()
def plot_logit_lens(result: Any, *, title: str | None = None) -> Figure:
    """Logit lens: per layer, the probability (top, log scale) and rank (bottom) of each target
    token, with the top-1 decoded token of each layer written along the top."""
    fig = Figure(figsize=TALL)
    top, bottom = fig.subplots(2, 1, sharex=True)
    x = np.arange(len(result.layers))
    for j, target in enumerate(result.targets):
        label = repr(target.token) + (f" (1st of {target.pieces} pieces)" if target.pieces > 1 else "")
        top.plot(x, result.probs[:, j], marker="o", markersize=3, label=label)
        bottom.plot(x, result.ranks[:, j], marker="o", markersize=3)
    top.set(ylabel="probability", yscale="log", ylim=(max(float(result.probs.min()) / 2, 1e-12), 1.5))
    top.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False, title="target")
    for i, tokens in enumerate(result.top_tokens):
        top.annotate(repr(tokens[0])[1:-1][:12], (x[i], 1.0), xycoords=top.get_xaxis_transform(),
                     textcoords="offset points", xytext=(0, 2), ha="left", va="bottom", rotation=45, fontsize=7)
    bottom.set(yscale="log", ylabel="rank (1 = top)", xlabel="layer")
    bottom.invert_yaxis()
    bottom.set_xticks(x, result.layers)
    top.set_title(title or f"logit lens at position {result.position} ({result.query!r})", pad=40)
    return fig

def _mean_heads(trace: Any, probs: torch.Tensor, head: int | None) -> np.ndarray:
    """(heads, …) → (…): one head (by its number in the model) or the mean over the kept heads."""
    probs = probs.float()
    if head is None:
        return probs.mean(0).numpy()
    kept = list(range(probs.shape[0])) if trace.heads is None else [int(h) for h in trace.heads]
    if head not in kept:
        raise ValueError(f"head {head} was not captured (captured heads: {kept}): trace again with heads= including it")
    return probs[kept.index(head)].numpy()


def _attention_over_time(trace: Any, rows: Any, layers: Sequence[int] | None, heads: Any,
                         audio: int) -> tuple[np.ndarray, float, list[str], str]:
    """(rows × time weights, seconds per column, row labels, description) averaged over layers and heads."""
    what = trace.audio_attention       # Qwen-Audio: the LLM's self-attention; Whisper: cross-attention
    cross = what == "cross"
    row_index = trace.row_index(rows)
    labels = [str(s) for s in trace.positions["label"].to_numpy()[trace.rows[row_index]]]
    if isinstance(heads, str):
        if heads != "alignment" or not trace.alignment_heads:
            raise ValueError(f"heads={heads!r}: 'alignment' needs a model whose config names alignment heads "
                             "(Whisper); otherwise give head numbers or None")
        pairs = list(trace.alignment_heads)
        missing = sorted({layer for layer, _ in pairs} - set(trace.layers(what)))
        if missing:
            raise ValueError(f"the alignment heads are in layers {missing}, which were not captured: capture "
                             "'decoder.layers.*.cross_attn.pattern'")
        description = f"{len(pairs)} alignment heads"
    else:
        chosen = list(trace.layers(what)) if layers is None else list(layers)
        if not chosen:
            raise ValueError(f"no {what}-attention pattern was captured: capture "
                             f"{trace.patterns[what].format('*')!r}")
        head_list = [None] if heads is None else [heads] if isinstance(heads, int) else list(heads)
        pairs = [(layer, head) for layer in chosen for head in head_list]
        description = (f"layers {_ranges(chosen)} · "
                       + ("mean over heads" if heads is None else f"heads {_ranges(head_list)}"))
    stack = []
    for layer, head in pairs:
        probs = trace.pattern(layer, what)
        per_head = torch.as_tensor(_mean_heads(trace, probs, head))     # (rows, keys)
        stack.append(per_head[row_index])
    weights = torch.stack(stack).mean(0).numpy()
    if cross:
        frames = min(weights.shape[1], encoder_frames(trace.inputs.audios[audio].n_samples))
        return weights[:, :frames], trace.frame_seconds, labels, description
    col_index, tokens = trace.audio_cols(audio)
    if len(col_index) == 0:
        raise ValueError(f"no audio token of audio {audio} is among the captured key columns: trace with "
                         "cols=None or cols='audio'")
    order = np.argsort(tokens)
    if not np.array_equal(tokens[order], np.arange(len(tokens))):
        raise ValueError("the captured key columns hold only part of the audio's tokens: trace with cols='audio'")
    return weights[:, col_index[order]], SECONDS_PER_TOKEN, labels, description


def _ranges(values: Sequence[Any]) -> str:
    values = list(values)
    if len(values) > 2 and values == list(range(values[0], values[-1] + 1)):
        return f"{values[0]}–{values[-1]}"
    return ", ".join(str(v) for v in values)

