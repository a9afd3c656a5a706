"""Attention figures from a Trace: time axes in seconds, the numbers drawn are the captured ones, errors."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from matplotlib.figure import Figure
from tiny_models import WHISPER_ALIGNMENT_HEADS, WHISPER_PREFIX, write_whisper

import workbench
from workbench.analysis.trace import trace
from workbench.audio import encoder_frames
from workbench.demo import demo_path
from workbench.errors import TraceRequestError
from workbench.figures.attention import (
    TIME_MAP_MAX_ROWS,
    plot_attention_mass,
    plot_attention_over_time,
    plot_attention_pattern,
    plot_audio_attention,
    plot_encoder_attention,
)
from workbench.tags import preset

N_SAMPLES = 93_680      # 1272-128104-0000.flac: 5.855 s, 293 encoder frames, 146 audio tokens


@pytest.fixture(autouse=True)
def no_glyph_warnings():
    with warnings.catch_warnings():   # the random model writes CJK tokens that DejaVu Sans lacks
        warnings.filterwarnings("ignore", message="Glyph .* missing from font")
        yield


@pytest.fixture(scope="module")
def tiny(tiny_dir: Path):
    return workbench.load(tiny_dir / "checkpoint")


@pytest.fixture(scope="module")
def clip(tiny_dir: Path) -> str:
    return str(tiny_dir / "clips" / "1272-128104-0000.flac")


@pytest.fixture(scope="module")
def tiny_trace(tiny, clip):
    return trace(tiny, preset("librispeech"), clip, generate=3,
                 capture=["llm.layers.*.attn.pattern", "encoder.blocks.*.attn.pattern"])


@pytest.fixture(scope="module")
def whisper_trace(tmp_path_factory):
    model = workbench.load(write_whisper(tmp_path_factory.mktemp("whisper")))
    model.model.generation_config.alignment_heads = WHISPER_ALIGNMENT_HEADS
    return trace(model, WHISPER_PREFIX, str(demo_path("speech_en")), generate=3,
                 capture=["decoder.layers.*.cross_attn.pattern", "decoder.layers.*.self_attn.pattern"])


def image_of(ax) -> np.ndarray:
    return np.asarray(ax.images[0].get_array())


def test_encoder_attention_axes_are_seconds_and_show_the_pattern(tiny_trace):
    fig = plot_encoder_attention(tiny_trace, 1)
    ax = fig.axes[0]
    assert isinstance(fig, Figure) and ax.get_xlabel() == "key time (s)" and ax.get_ylabel() == "query time (s)"
    assert ax.images[0].get_extent() == pytest.approx([0, 293 * 0.02, 293 * 0.02, 0])
    pattern = tiny_trace["encoder.blocks.1.attn.pattern"][0]
    np.testing.assert_allclose(image_of(ax), pattern.mean(0).numpy(), rtol=1e-6)
    np.testing.assert_allclose(image_of(plot_encoder_attention(tiny_trace, 1, head=2).axes[0]), pattern[2].numpy())
    with pytest.raises(ValueError, match="head 7 was not captured"):
        plot_encoder_attention(tiny_trace, 1, head=7)
    with pytest.raises(KeyError, match="no encoder attention pattern of layer 5"):
        plot_encoder_attention(tiny_trace, 5)


def test_audio_strip_lies_under_the_mel_on_one_time_axis(tiny_trace):
    fig = plot_audio_attention(tiny_trace, "last")
    mel_ax, strip_ax = fig.axes[:2]
    assert strip_ax.get_shared_x_axes().joined(mel_ax, strip_ax)
    assert strip_ax.get_xlim() == pytest.approx((0, N_SAMPLES / 16000))
    bars = strip_ax.patches
    assert len(bars) == 146
    np.testing.assert_allclose([b.get_x() for b in bars], np.arange(146) * 0.04)
    np.testing.assert_allclose([b.get_width() for b in bars], 0.04)
    last = np.mean([tiny_trace[f"llm.layers.{i}.attn.pattern"][:, -1, 1:147].mean(0).numpy() for i in range(2)], 0)
    np.testing.assert_allclose([b.get_height() for b in bars], last, rtol=1e-5)
    one = plot_audio_attention(tiny_trace, [154], layers=[0], heads=[3]).axes[1]
    np.testing.assert_allclose([b.get_height() for b in one.patches],
                               tiny_trace["llm.layers.0.attn.pattern"][3, 154, 1:147].numpy(), rtol=1e-5)


def test_token_time_map_rows_are_output_tokens(tiny_trace):
    fig = plot_attention_over_time(tiny_trace, "output", normalize=False)
    image = image_of(fig.axes[0])
    assert image.shape == (3, 146)
    assert fig.axes[0].images[0].get_extent()[:2] == pytest.approx([0, 146 * 0.04])
    expected = np.mean([tiny_trace[f"llm.layers.{i}.attn.pattern"][:, 154:157, 1:147].mean(0).numpy()
                        for i in range(2)], 0)
    np.testing.assert_allclose(image, expected, rtol=1e-5)
    normalized = image_of(plot_attention_over_time(tiny_trace, "output").axes[0])
    np.testing.assert_allclose(normalized.max(axis=1), 1.0)
    with pytest.raises(ValueError, match=f"at most {TIME_MAP_MAX_ROWS}"):
        plot_attention_over_time(tiny_trace, "audio")


def test_attention_mass_shares_sum_to_one(tiny_trace):
    table = tiny_trace.attention_mass("output")
    np.testing.assert_allclose(table[["audio", "tags", "text"]].sum(axis=1), 1.0, rtol=1e-5)
    fig = plot_attention_mass(tiny_trace, "output")
    ax = fig.axes[0]
    assert len(ax.patches) == 3 * 2                                  # three groups × two layers
    tops = [p.get_y() + p.get_height() for p in ax.patches[-2:]]     # the text bars sit on top
    np.testing.assert_allclose(tops, 1.0, rtol=1e-5)


def test_attention_mass_needs_every_key(tiny, clip):
    narrow = trace(tiny, preset("librispeech"), clip, capture="llm.layers.0.attn.pattern", cols="audio")
    with pytest.raises(TraceRequestError, match="needs every key position: trace with cols=None"):
        plot_attention_mass(narrow)
    with pytest.raises(ValueError, match="no self-attention pattern was captured"):
        plot_audio_attention(trace(tiny, preset("librispeech"), clip, capture="llm.embed"))


def test_whisper_cross_attention_in_20_ms_frames(whisper_trace):
    frames = encoder_frames(52_593)                                  # speech_en, cropped from the 30 s window
    strip = plot_audio_attention(whisper_trace, "last").axes[1]
    assert len(strip.patches) == frames
    np.testing.assert_allclose(strip.patches[1].get_x(), 0.02)
    cross = whisper_trace["decoder.layers.1.cross_attn.pattern"]
    aligned = image_of(plot_attention_over_time(whisper_trace, "output", heads="alignment", normalize=False).axes[0])
    np.testing.assert_allclose(aligned, cross[[0, 2]][:, 4:7, :frames].mean(0).numpy(), rtol=1e-5)
    pattern = plot_attention_pattern(whisper_trace, 0, what="cross")
    assert image_of(pattern.axes[0]).shape == (7, frames)
    assert pattern.axes[0].get_xlabel() == "key time (s)"


def test_alignment_heads_need_a_model_that_names_them(tiny_trace):
    with pytest.raises(ValueError, match="'alignment' needs a model whose config names alignment heads"):
        plot_attention_over_time(tiny_trace, "output", heads="alignment")


def test_trace_plot_dispatches_to_the_figures(tiny_trace):
    ax = tiny_trace.plot("time", "output", normalize=False).axes[0]
    np.testing.assert_allclose(image_of(ax), image_of(plot_attention_over_time(tiny_trace, "output",
                                                                               normalize=False).axes[0]))
    assert tiny_trace.plot("encoder", 0).axes[0].get_title().startswith("encoder layer 0")
    with pytest.raises(ValueError, match="what='heatmap': choose one of audio, time, encoder, mass, pattern"):
        tiny_trace.plot("heatmap")
