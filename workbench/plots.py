"""Figures. Every function returns a matplotlib `Figure`; every time axis is in seconds.

Figures are built with `matplotlib.figure.Figure`, not pyplot: nothing global is kept, and a
notebook shows a figure once, when a cell returns it (under `%matplotlib inline`, or with
`display(fig)`). Pass `ax=` to draw into a panel of your own figure instead.

Audio time has three grids (see workbench.audio): mel frames of 10 ms, encoder frames of 20 ms
and LLM audio tokens of 40 ms. Plots of a clip can draw the 40 ms token grid, because that is
the resolution at which the LLM sees the audio (and at which attention and attribution live).

Here: the clip (waveform, mel), attention and the logit lens. The figures of patching, knockouts
and word alignment are in `workbench.plots_interventions`, which imports the shared pieces below.
"""
from __future__ import annotations

import math
import numbers
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from workbench.audio import (HOP_LENGTH, N_FRAMES, SAMPLE_RATE, SECONDS_PER_TOKEN, audio_tokens, encoder_frames,
                            mel_frames)
from workbench.style import (CMAP_ATTENTION, CMAP_MEL, GRID_COLOR, LINE_COLOR, PADDING_COLOR, SQUARE, TALL, WIDE,
                             publication_style)

MEL_BINS = (80, 128)        # Qwen-Audio / Whisper-large-v2, Qwen2-Audio / Whisper-large-v3
EVERY_TOKEN_UP_TO = 100     # on an axis up to this many tokens wide (4 s), a line for every token
MAX_GRID_LINES = 40         # on wider axes every Nth token, so that at most this many lines remain
MAX_TOKEN_LABELS = 15       # token numbers on the top axis
NICE_STEPS = (1, 2, 5, 10, 25, 50, 100, 250)
TOKEN_GRID_GID = "token_grid"   # gid of the grid's LineCollection, for tests and later styling
PADDING_GID = "zero_padding"


# ---------------------------------------------------------------------------------------------
# Audio


@publication_style()
def plot_waveform(audio: Any, sr: int, *, token_grid: bool = False, ax: Axes | None = None,
                  title: str | None = None) -> Figure:
    """Samples against seconds. `token_grid=True` adds the 40 ms audio-token grid (16 kHz only)."""
    samples = _as_array(audio, "audio", ndim=1)
    if samples.size == 0:
        raise ValueError("audio is empty: plot_waveform needs at least one sample")
    if isinstance(sr, bool) or not isinstance(sr, numbers.Integral) or sr <= 0:
        raise ValueError(f"sr={sr!r} is not a sample rate: give a positive whole number of Hz, e.g. 16000")
    if token_grid and sr != SAMPLE_RATE:
        raise ValueError(f"the audio-token grid is defined on {SAMPLE_RATE} Hz audio, got sr={sr}: resample "
                         f"first, e.g. load_audio(path, sr={SAMPLE_RATE})")
    fig, ax = _figure_and_axes(ax)
    duration_s = len(samples) / sr
    ax.plot(np.arange(len(samples)) / sr, samples, color=LINE_COLOR, linewidth=0.5)
    peak = max(1.0, float(np.abs(samples).max()))
    ax.set(xlim=(0, duration_s), ylim=(-peak, peak), xlabel="time (s)", ylabel="amplitude")
    if token_grid:
        _draw_token_grid(ax, audio_tokens(len(samples)), duration_s, color="0.3")
    ax.set_title(title or f"waveform · {duration_s:.2f} s at {sr} Hz")
    return fig


@publication_style()
def plot_mel(mel: Any, n_samples: int | None = None, token_grid: bool = True, ax: Axes | None = None,
             title: str | None = None) -> Figure:
    """A (n_mels, frames) log-mel spectrogram against seconds (10 ms a frame).

    n_samples: the clip's real length in 16 kHz samples. The mel of `log_mel` always spans the
      30 s window; with n_samples the zero padding after the clip is shaded and the token grid
      stops where the clip's tokens stop. Without it the grid covers the whole mel.
    token_grid: the 40 ms audio-token grid: one light line per token on an axis of up to 4 s,
      every Nth token on longer ones (see `token_grid_steps`); the top axis counts tokens.
    """
    mel = _as_array(mel, "mel", ndim=2)
    n_mels, n_frames = mel.shape
    if n_mels not in MEL_BINS:
        raise ValueError(f"mel has shape {mel.shape}: expected (n_mels, frames) with n_mels in {MEL_BINS}; "
                         "if frames come first pass mel.T")
    if not 0 < n_frames <= N_FRAMES:
        raise ValueError(f"mel has {n_frames} frames; a Qwen-Audio mel has 1 to {N_FRAMES} (30 s at 10 ms)")
    span_s = n_frames * HOP_LENGTH / SAMPLE_RATE
    if n_samples is not None:
        if isinstance(n_samples, bool) or not isinstance(n_samples, numbers.Integral) or n_samples <= 0:
            raise ValueError(f"n_samples={n_samples!r} must be a positive integer count of 16 kHz samples")
        if n_samples // HOP_LENGTH > n_frames:
            raise ValueError(f"n_samples={n_samples} ({n_samples / SAMPLE_RATE:.2f} s) is longer than the mel, "
                             f"which spans {n_frames} frames ({span_s:.2f} s): pass the clip's own length")

    fig, ax = _figure_and_axes(ax)
    image = ax.imshow(mel, origin="lower", aspect="auto", cmap=CMAP_MEL, extent=(0, span_s, 0, n_mels))
    fig.colorbar(image, ax=ax, pad=0.01, label="log-mel")
    ax.set(xlim=(0, span_s), xlabel="time (s)", ylabel="mel bin")
    clip_s = span_s if n_samples is None else min(n_samples / SAMPLE_RATE, span_s)
    if clip_s < span_s:
        ax.axvspan(clip_s, span_s, facecolor=PADDING_COLOR, alpha=0.6, hatch="//", edgecolor="0.3",
                   linewidth=0, gid=PADDING_GID)
        ax.text((clip_s + span_s) / 2, n_mels / 2, "zero padding", ha="center", va="center",
                color="white", fontsize=9)
    if token_grid:
        n_tokens = audio_tokens(n_frames * HOP_LENGTH if n_samples is None else n_samples)
        _draw_token_grid(ax, n_tokens, span_s, color=GRID_COLOR)
    ax.set_title(title or f"log-mel · {n_mels} bins · {clip_s:.2f} s")
    return fig


# ---------------------------------------------------------------------------------------------
# Shared pieces


def token_grid_steps(axis_tokens: float) -> tuple[int, int]:
    """(line step, label step) in tokens for an axis `axis_tokens` tokens wide: a line for every
    token up to EVERY_TOKEN_UP_TO, else every Nth token; density follows the axis, not the clip,
    so a 3 s clip on a 30 s axis gets as sparse a grid as a 30 s clip."""
    line_step = 1 if axis_tokens <= EVERY_TOKEN_UP_TO else _nice_step(axis_tokens, MAX_GRID_LINES, 1)
    return line_step, _nice_step(axis_tokens, MAX_TOKEN_LABELS, line_step)


def _nice_step(n: float, at_most: int, multiple_of: int) -> int:
    for step in NICE_STEPS:
        if step % multiple_of == 0 and math.ceil(n / step) <= at_most:
            return step
    return NICE_STEPS[-1]


def _draw_token_grid(ax: Axes, n_tokens: int, span_s: float, color: str) -> None:
    """A line at the start of every (or every Nth) audio token and a top axis that counts tokens."""
    line_step, label_step = token_grid_steps(span_s / SECONDS_PER_TOKEN)
    starts = np.arange(0, n_tokens, line_step) * SECONDS_PER_TOKEN
    # vlines in axes-fraction y: the grid spans any y range (mel bins or amplitude)
    ax.vlines(starts, 0, 1, transform=ax.get_xaxis_transform(), colors=color, linewidths=0.5,
              alpha=0.35 if line_step == 1 else 0.6, gid=TOKEN_GRID_GID)
    top = ax.secondary_xaxis("top", functions=(lambda s: s / SECONDS_PER_TOKEN,
                                               lambda k: k * SECONDS_PER_TOKEN))
    top.set_xticks(np.arange(0, n_tokens, label_step))
    top.set_xlabel(f"audio token ({SECONDS_PER_TOKEN * 1000:.0f} ms each)")
    top.tick_params(labelsize=7)


def _figure_and_axes(ax: Axes | None, size: tuple[float, float] = WIDE) -> tuple[Figure, Axes]:
    if ax is not None:
        return ax.figure, ax
    fig = Figure(figsize=size)
    return fig, fig.add_subplot()


def _as_array(x: Any, name: str, ndim: int) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().float().cpu().numpy()
    array = np.asarray(x)
    if array.ndim != ndim:
        raise ValueError(f"{name} has shape {array.shape}: expected {ndim} dimension(s)"
                         + (" (one clip of mono samples)" if ndim == 1 else " (n_mels, frames) for one clip"))
    if not np.issubdtype(array.dtype, np.number):
        raise TypeError(f"{name} must hold numbers, not {array.dtype}")
    return array


# ---------------------------------------------------------------------------------------------
# Attention and the logit lens, drawn from a `workbench.trace.Trace`
#
# Every time axis is in seconds: LLM audio tokens cover 40 ms, encoder frames (and Whisper's
# cross-attention keys) 20 ms. `heads` is None (the mean over the heads the trace kept), a list of
# head numbers, or "alignment" (Whisper: the (layer, head) pairs its generation config names).

TIME_MAP_MAX_ROWS = 80      # token × time maps with more query rows than this are refused (illegible)
STRIP_COLOR = "#c0392b"
GROUP_COLORS = {"audio": "#1f77b4", "tags": "#ff7f0e", "text": "#2ca02c"}


@publication_style()
def plot_encoder_attention(trace: Any, layer: int, head: int | None = None, *, audio: int = 0,
                           crop: bool = True, ax: Axes | None = None, title: str | None = None) -> Figure:
    """Encoder self-attention of one block, one head or the mean over heads, query × key time in seconds.

    crop: Whisper's encoder always runs the 30 s window; keep the frames of the clip itself.
    Colour is √p so that the weaker off-diagonal structure stays visible next to the diagonal.
    """
    from matplotlib.colors import PowerNorm

    patterns = trace.pattern(layer, "encoder")
    if not 0 <= audio < len(patterns):
        raise ValueError(f"audio={audio}: the trace holds {len(patterns)} audio(s)")
    probs = _mean_heads(trace, patterns[audio], head)
    frames = probs.shape[-1]
    if crop:
        frames = min(frames, encoder_frames(trace.inputs.audios[audio].n_samples))
    probs = probs[:frames, :frames]
    span_s = frames * trace.frame_seconds
    fig, ax = _figure_and_axes(ax, SQUARE)
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
    fig, ax = _figure_and_axes(ax, (9.0, max(2.5, 0.22 * len(labels) + 1.2)))
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
    fig, ax = _figure_and_axes(ax)
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
    fig, ax = _figure_and_axes(ax, SQUARE)
    row_labels = trace.positions["label"].to_numpy()[trace.rows]
    if what == "cross":   # Whisper's 30 s window: keep the clip's own frames
        probs = probs[:, :encoder_frames(trace.inputs.audios[0].n_samples)]
        span_s = probs.shape[1] * trace.frame_seconds
        image = ax.imshow(probs, cmap=CMAP_ATTENTION, aspect="auto", extent=(0, span_s, len(probs) - 0.5, -0.5))
        ax.set_xlabel("key time (s)")
    else:
        image = ax.imshow(probs, cmap=CMAP_ATTENTION, aspect="auto")
        _label_ticks(ax.set_xticks, trace.positions["label"].to_numpy()[trace.cols])
        ax.set_xlabel("key position")
    _label_ticks(ax.set_yticks, row_labels)
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


def _label_ticks(set_ticks: Any, labels: np.ndarray, at_most: int = 40) -> None:
    step = max(1, math.ceil(len(labels) / at_most))
    ticks = np.arange(0, len(labels), step)
    set_ticks(ticks, [repr(str(labels[t]))[1:-1][:16] for t in ticks], fontsize=6)


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

