"""Figures: seconds axes that match the clip, the 40 ms token grid, padding, errors, determinism."""
from __future__ import annotations

import io
import math

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from workbench.audio import SAMPLE_RATE, audio_tokens, load_audio, log_mel, mel_frames
from workbench.demo import demo_clip
from workbench.figures.clip import (
    MAX_GRID_LINES,
    MAX_TOKEN_LABELS,
    PADDING_GID,
    TOKEN_GRID_GID,
    plot_mel,
    plot_waveform,
    token_grid_steps,
)
from workbench.figures.style import STYLE, publication_style, save_figure, use_style


@pytest.fixture(scope="module")
def clip() -> tuple[np.ndarray, torch.Tensor]:
    audio = load_audio(demo_clip("speech_en").path)
    return audio, log_mel(audio)


def grid_starts(ax) -> np.ndarray:
    [grid] = [c for c in ax.collections if c.get_gid() == TOKEN_GRID_GID]
    return np.array([segment[0][0] for segment in grid.get_segments()])


def padding(ax):
    return [p for p in ax.patches if p.get_gid() == PADDING_GID]


def test_cropped_mel_has_the_clip_length_and_a_line_per_token(clip):
    audio, mel = clip
    frames = mel_frames(len(audio))
    fig = plot_mel(mel[:, :frames], n_samples=len(audio))
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    assert ax.get_xlim() == pytest.approx((0.0, frames / 100))           # 10 ms frames, in seconds
    assert ax.get_xlim()[1] == pytest.approx(len(audio) / SAMPLE_RATE, abs=0.01)
    assert ax.get_ylim() == (0.0, 80.0) and ax.get_xlabel() == "time (s)"
    starts = grid_starts(ax)
    assert len(starts) == audio_tokens(len(audio)) == 82
    np.testing.assert_allclose(starts, np.arange(82) * 0.04)
    assert padding(ax) == []                                              # nothing after the clip


def test_padded_mel_shades_the_padding_and_thins_the_grid(clip):
    audio, mel = clip
    ax = plot_mel(mel, n_samples=len(audio)).axes[0]
    assert ax.get_xlim() == pytest.approx((0.0, 30.0))
    [shade] = padding(ax)
    assert shade.get_x() == pytest.approx(len(audio) / SAMPLE_RATE)
    assert shade.get_x() + shade.get_width() == pytest.approx(30.0)
    line_step, label_step = token_grid_steps(750)
    assert line_step > 1
    np.testing.assert_allclose(grid_starts(ax), np.arange(0, 82, line_step) * 0.04)  # the clip's tokens only
    [top] = ax.child_axes                                                 # the token-count axis
    ticks = top.get_xticks()
    assert ticks[0] == 0 and np.all(np.diff(ticks) == label_step) and ticks[-1] < 82


def test_mel_without_length_grids_the_whole_window(clip):
    _, mel = clip
    ax = plot_mel(mel).axes[0]
    line_step, _ = token_grid_steps(750)
    assert len(grid_starts(ax)) == math.ceil(750 / line_step) <= MAX_GRID_LINES
    assert padding(ax) == []


def test_mel_128_bins_numpy_and_no_grid():
    mel = np.zeros((128, 250), dtype=np.float32)
    ax = plot_mel(mel, token_grid=False, title="v3").axes[0]
    assert ax.get_ylim() == (0.0, 128.0) and ax.get_xlim() == pytest.approx((0.0, 2.5))
    assert [c for c in ax.collections if c.get_gid() == TOKEN_GRID_GID] == []
    assert ax.get_title() == "v3"


def test_token_grid_steps_stay_readable():
    for axis_tokens in [1, 7, 82, 100, 101, 250, 333, 600, 750]:
        line_step, label_step = token_grid_steps(axis_tokens)
        assert label_step % line_step == 0
        assert math.ceil(axis_tokens / label_step) <= MAX_TOKEN_LABELS
        if axis_tokens <= 100:
            assert line_step == 1
        else:
            assert math.ceil(axis_tokens / line_step) <= MAX_GRID_LINES


def test_waveform_axis_in_seconds_with_token_grid(clip):
    audio, _ = clip
    fig = plot_waveform(audio, SAMPLE_RATE, token_grid=True)
    ax = fig.axes[0]
    assert ax.get_xlim() == pytest.approx((0.0, len(audio) / SAMPLE_RATE))
    assert len(grid_starts(ax)) == audio_tokens(len(audio))
    [line] = ax.lines
    assert line.get_xdata()[-1] == pytest.approx((len(audio) - 1) / SAMPLE_RATE)


def test_waveform_other_rate_and_tensor():
    audio = torch.sin(torch.arange(44100) / 10.0)
    ax = plot_waveform(audio, 44100).axes[0]
    assert ax.get_xlim() == pytest.approx((0.0, 1.0))
    assert [c for c in ax.collections if c.get_gid() == TOKEN_GRID_GID] == []


def test_draws_into_a_given_axes():
    fig = Figure()
    left, right = fig.subplots(1, 2)
    assert plot_waveform(np.zeros(1600), SAMPLE_RATE, ax=left) is fig
    assert plot_mel(np.zeros((80, 10)), ax=right) is fig
    assert left.get_xlim() == pytest.approx((0.0, 0.1))


@pytest.mark.parametrize("call, message", [
    (lambda: plot_mel(np.zeros((3000, 80))), r"expected \(n_mels, frames\).*mel\.T"),
    (lambda: plot_mel(np.zeros((1, 80, 3000))), "expected 2 dimension"),
    (lambda: plot_mel(np.zeros((80, 3001))), "3001 frames.*1 to 3000"),
    (lambda: plot_mel(np.zeros((80, 300)), n_samples=48_160), r"n_samples=48160 \(3.01 s\) is longer than the mel"),
    (lambda: plot_mel(np.zeros((80, 300)), n_samples=0), "n_samples=0 must be a positive integer"),
    (lambda: plot_mel(np.zeros((80, 300)), n_samples=2.5), "n_samples=2.5 must be a positive integer"),
    (lambda: plot_waveform(np.zeros((2, 100)), 16000), "expected 1 dimension"),
    (lambda: plot_waveform(np.zeros(0), 16000), "audio is empty"),
    (lambda: plot_waveform(np.zeros(10), 0), "sr=0 is not a sample rate"),
    (lambda: plot_waveform(np.zeros(10), 44100, token_grid=True), "grid is defined on 16000 Hz.*resample"),
])
def test_bad_input_is_one_clear_error(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_mel_of_strings_is_a_type_error():
    with pytest.raises(TypeError, match="mel must hold numbers"):
        plot_mel(np.full((80, 10), "x"))


def test_plots_leave_no_global_state(clip):
    audio, mel = clip
    before, figures = dict(matplotlib.rcParams), plt.get_fignums()   # another test may leave pyplot figures open
    plot_mel(mel, n_samples=len(audio))
    assert dict(matplotlib.rcParams) == before
    assert plt.get_fignums() == figures      # built outside pyplot: nothing to close, no double display


def test_style_applies_and_renders_deterministically(clip, tmp_path):
    audio, mel = clip
    with publication_style():
        assert matplotlib.rcParams["svg.hashsalt"] == STYLE["svg.hashsalt"]
    pngs = []
    for _ in range(2):
        buffer = io.BytesIO()
        plot_mel(mel[:, :400], n_samples=len(audio)).savefig(buffer, format="png")
        pngs.append(buffer.getvalue())
    assert pngs[0] == pngs[1]
    svg = save_figure(plot_waveform(audio[:1600], SAMPLE_RATE), tmp_path / "w.svg").read_text()
    assert "<dc:date>" not in svg and save_figure(plot_waveform(audio[:1600], SAMPLE_RATE),
                                                  tmp_path / "w2.svg").read_text() == svg
    assert save_figure(plot_waveform(audio[:1600], SAMPLE_RATE), tmp_path / "w.png").stat().st_size > 0
    with pytest.raises(ValueError, match="'w.jpg'.*png, .svg or .pdf"):
        save_figure(Figure(), tmp_path / "w.jpg")


def test_use_style_sets_the_rc():
    with matplotlib.rc_context():             # restores the rc afterwards
        matplotlib.rcParams["font.size"] = 17.0
        use_style()
        assert matplotlib.rcParams["font.size"] == STYLE["font.size"]
        assert matplotlib.rcParams["image.interpolation"] == "nearest"
