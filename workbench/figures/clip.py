"""Figures of a clip: its waveform and its log-mel, against seconds, with the 40 ms audio-token grid.

Audio time has three grids (see workbench.audio): mel frames of 10 ms, encoder frames of 20 ms
and LLM audio tokens of 40 ms. Plots of a clip can draw the 40 ms token grid, because that is
the resolution at which the LLM sees the audio (and at which attention and attribution live).
"""
from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from workbench.audio import HOP_LENGTH, N_FRAMES, SAMPLE_RATE, SECONDS_PER_TOKEN, audio_tokens
from workbench.figures.style import CMAP_MEL, GRID_COLOR, LINE_COLOR, PADDING_COLOR, figure_and_axes, publication_style

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
    fig, ax = figure_and_axes(ax)
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

    fig, ax = figure_and_axes(ax)
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


