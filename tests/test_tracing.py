"""Causal tracing with corrupted audio.

Corruptions are checked against direct numpy computations (SNR, band energy, roll, cut/pad);
restoring is checked at its ends (every position of a layer → the clean score, none → the corrupted
score, both against plain forward passes) and cell by cell (a sweep's cell is the single restore it
stands for); many clips average to the mean of the single traces, with a CI around it.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from matplotlib.figure import Figure
from tiny_models import WHISPER_PREFIX

import workbench as wb
from workbench.analysis.tracing import (
    CausalTrace,
    causal_trace,
    causal_trace_many,
    corrupt_audio,
    measured_snr_db,
    restored_score,
)
from workbench.audio import SAMPLE_RATE
from workbench.errors import AudioError, NotSupportedError, PatchingError
from workbench.tags import preset

ASR = preset("librispeech").render()
CONTINUATION = " mister quilting"


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # nano's tiny matrices run ~30x slower with two threads on a loaded 2-core machine
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    return wb.load_audio(wb.demo.demo_path("speech_en"))


def _band_energy(x: np.ndarray, low: float, high: float) -> float:
    spectrum = np.abs(np.fft.rfft(x.astype(np.float64))) ** 2
    f = np.fft.rfftfreq(len(x), 1 / SAMPLE_RATE)
    return float(spectrum[(f >= low) & (f <= high)].sum())


# --- corruptions ---------------------------------------------------------------------------------

@pytest.mark.parametrize("snr", [-10.0, 0.0, 6.0, 20.0])
def test_noise_has_the_requested_snr(speech, snr):
    noisy = corrupt_audio(speech, "noise", snr_db=snr, seed=3)
    added = noisy.astype(np.float64) - speech
    measured = 10 * np.log10(np.mean(speech.astype(np.float64) ** 2) / np.mean(added ** 2))
    assert abs(measured - snr) < 0.1 and len(noisy) == len(speech) and noisy.dtype == np.float32
    assert measured_snr_db(speech, noisy) == pytest.approx(measured, abs=1e-9)
    np.testing.assert_array_equal(noisy, corrupt_audio(speech, "noise", snr_db=snr, seed=3))   # seeded
    assert not np.array_equal(noisy, corrupt_audio(speech, "noise", snr_db=snr, seed=4))


def test_a_removed_band_has_no_energy_left(speech):
    cut = corrupt_audio(speech, "band", band_hz=(300, 3400))
    assert len(cut) == len(speech)
    assert _band_energy(cut, 300, 3400) < 1e-9 * _band_energy(speech, 300, 3400)
    # the rest of the spectrum is untouched
    for low, high in [(0, 290), (3410, 8000)]:
        assert _band_energy(cut, low, high) == pytest.approx(_band_energy(speech, low, high), rel=1e-4)


def test_shift_is_a_circular_delay_and_clip_is_cut_or_padded(speech):
    np.testing.assert_array_equal(corrupt_audio(speech, "shift", shift_s=0.25), np.roll(speech, 4000))
    np.testing.assert_array_equal(corrupt_audio(speech, "shift", shift_s=-0.1), np.roll(speech, -1600))
    other = wb.load_audio(wb.demo.demo_path("speech_de"))
    replaced = corrupt_audio(speech, "clip", other=other)
    n = min(len(other), len(speech))
    assert len(replaced) == len(speech)
    np.testing.assert_array_equal(replaced[:n], other[:n])
    assert not replaced[n:].any()


def test_bad_corruptions_get_one_clear_error(speech):
    with pytest.raises(ValueError, match="how='reverse': choose one of"):
        corrupt_audio(speech, "reverse")
    with pytest.raises(ValueError, match="band_hz=\\(3000, 9000\\): give \\(low, high\\)"):
        corrupt_audio(speech, "band", band_hz=(3000, 9000))
    with pytest.raises(ValueError, match="pass other= a path or an array"):
        corrupt_audio(speech, "clip")
    with pytest.raises(ValueError, match="shift_s=0 moves the .* clip onto itself"):
        corrupt_audio(speech, "shift", shift_s=0)
    with pytest.raises(AudioError, match="it is silent"):
        corrupt_audio(np.zeros(16_000, np.float32), "noise")


# --- restoring: exact ends and cells -------------------------------------------------------------

@pytest.fixture(scope="module")
def noisy(noise) -> np.ndarray:
    return corrupt_audio(noise, "noise", snr_db=-5, seed=1)


def _forward_score(model, audio, continuation: str = CONTINUATION) -> float:
    """log p(continuation) from a plain model.forward of prompt + continuation."""
    prompt = model.inputs(f"<audio>x</audio>{ASR}", [audio])
    ids = model.adapter.encode_text(continuation)
    logits = model.forward(f"<audio>x</audio>{ASR}{continuation}", [audio]).logits[0]
    rows = logits[prompt.length - 1:prompt.length - 1 + len(ids)].log_softmax(-1)
    return float(rows[torch.arange(len(ids)), torch.tensor(ids)].double().sum())


def test_restoring_every_position_gives_the_clean_score_and_none_the_corrupted(tiny_qwen, noise, noisy):
    clean, corrupt = _forward_score(tiny_qwen, noise), _forward_score(tiny_qwen, noisy)
    assert abs(clean - corrupt) > 0.01
    for layer in range(len(tiny_qwen.adapter.sequence.layers)):
        restored = restored_score(tiny_qwen, ASR, noise, noisy, layer=layer, positions="all", continuation=CONTINUATION)
        assert restored == pytest.approx(clean, abs=1e-4)
    nothing = restored_score(tiny_qwen, ASR, noise, noisy, layer=0, positions=[], continuation=CONTINUATION)
    assert nothing == pytest.approx(corrupt, abs=1e-4)


def test_a_trace_is_its_single_restores(tiny_qwen, noise, noisy):
    trace = causal_trace(tiny_qwen, ASR, noise, noisy, bins=8, continuation=CONTINUATION)
    n_layers = len(tiny_qwen.adapter.sequence.layers)
    assert trace.layers == tuple(range(n_layers))
    assert trace.columns == ("tags", *(f"t{k}" for k in range(8)), "answer")   # a tag prompt has no free text
    assert trace.clean == pytest.approx(_forward_score(tiny_qwen, noise), abs=1e-4)
    assert trace.corrupt == pytest.approx(_forward_score(tiny_qwen, noisy), abs=1e-4)
    # the columns split the sequence: every position restored by exactly one column
    everything = np.concatenate([np.array(p) for p in trace.positions])
    table = tiny_qwen.inputs(f"<audio>x</audio>{ASR}", [noise]).extended(tiny_qwen.adapter.encode_text(CONTINUATION))
    np.testing.assert_array_equal(np.sort(everything), np.arange(table.length))
    # the bins tile the audio span in time
    starts, ends = zip(*trace.seconds[1:9])
    n_audio_tokens = sum(len(p) for p in trace.positions[1:9]) - 2        # without <audio> and </audio>
    assert starts[0] == 0 and np.allclose(starts[1:], ends[:-1]) and ends[-1] == pytest.approx(n_audio_tokens * 0.04)
    for layer, column in [(0, "t0"), (n_layers - 1, "answer"), (1, "tags")]:
        j = trace.columns.index(column)
        single = restored_score(tiny_qwen, ASR, noise, noisy, layer=layer, positions=list(trace.positions[j]),
                                continuation=CONTINUATION)
        assert trace.scores[layer, j] == pytest.approx(single, abs=1e-6)
        assert restored_score(tiny_qwen, ASR, noise, noisy, layer=layer, positions=column,
                              continuation=CONTINUATION) == pytest.approx(single, abs=1e-6)
    table = trace.to_pandas()
    np.testing.assert_allclose(table["recovery"], (table["score"] - trace.corrupt) / (trace.clean - trace.corrupt))
    assert set(table.loc[table["kind"] == "audio", "column"]) == {f"t{k}" for k in range(8)}
    assert isinstance(trace.plot(), Figure) and isinstance(trace.plot(value="delta"), Figure)


def test_a_named_corruption_is_corrupt_audio_with_the_seed(tiny_qwen, noise):
    named = causal_trace(tiny_qwen, ASR, noise, "noise", layers=[0], bins=2, continuation=CONTINUATION, seed=5)
    given = causal_trace(tiny_qwen, ASR, noise, corrupt_audio(noise, "noise", seed=5), layers=[0], bins=2,
                         continuation=CONTINUATION)
    np.testing.assert_array_equal(named.scores, given.scores)
    assert named.corruption == "noise"


# --- bad input ------------------------------------------------------------------------------------

def test_clips_of_different_lengths_are_refused(tiny_qwen, noise):
    with pytest.raises(AudioError, match="the corrupted clip gives .* audio positions .* both clips need the same length"):
        causal_trace(tiny_qwen, ASR, noise, noise[:12_000], continuation=CONTINUATION)


def test_bad_requests_get_one_clear_error(tiny_qwen, noise, noisy):
    with pytest.raises(PatchingError, match="bins=0: give an int from 1 to the clip's"):
        causal_trace(tiny_qwen, ASR, noise, noisy, bins=0, continuation=CONTINUATION)
    with pytest.raises(PatchingError, match="bins=1000: give an int"):
        causal_trace(tiny_qwen, ASR, noise, noisy, bins=1000, continuation=CONTINUATION)
    with pytest.raises(PatchingError, match="layer=7"):
        causal_trace(tiny_qwen, ASR, noise, noisy, layers=[7], continuation=CONTINUATION)
    with pytest.raises(PatchingError, match="positions='audio': give 'all', one of"):
        restored_score(tiny_qwen, ASR, noise, noisy, layer=0, positions="audio", continuation=CONTINUATION)
    with pytest.raises(PatchingError, match="takes one clean clip"):
        causal_trace(tiny_qwen, ASR, [noise, noise], noisy, continuation=CONTINUATION)
    with pytest.raises(PatchingError, match="give one of .* or a list of 2 corrupted clips"):
        causal_trace_many(tiny_qwen, ASR, [noise, noise], noisy, continuations=[CONTINUATION] * 2)
    with pytest.raises(PatchingError, match="1 continuations for 2 clips"):
        causal_trace_many(tiny_qwen, ASR, [noise, noise], "noise", continuations=[CONTINUATION])


def test_whisper_is_refused_with_the_reason(tiny_whisper, noise):
    with pytest.raises(NotSupportedError, match="causal_trace is not supported for the whisper family.*splice"):
        causal_trace(tiny_whisper, WHISPER_PREFIX, noise, "noise", continuation=" ask")


# --- many clips on nano ---------------------------------------------------------------------------

def test_many_clips_average_their_traces_with_a_ci(speech):
    nano = wb.load("nano")
    clips = [speech, wb.load_audio(wb.demo.demo_path("speech_en"))[: len(speech) // 2],
             corrupt_audio(speech, "shift", shift_s=0.3)]
    prompt = wb.preset("librispeech", lang="en")
    many = causal_trace_many(nano, prompt, clips, "noise", layers=[0, 3], bins=4)
    assert len(many.traces) == 3 and all(isinstance(t, CausalTrace) for t in many.traces)
    assert all(t.clean > t.corrupt for t in many.traces)      # noise at 0 dB hurts nano's transcript
    summary = many.summary()
    assert isinstance(summary, pd.DataFrame) and len(summary) == 2 * len(many.traces[0].columns)
    for row in summary.itertuples():
        values = [t.recovery[t.layers.index(row.layer), t.columns.index(row.column)] for t in many.traces]
        assert row.mean == pytest.approx(np.mean(values)) and row.n == 3
        assert row.ci_low <= row.mean <= row.ci_high
    # at the last layer the answer positions carry (nearly) everything the scored logits read
    last = summary[(summary["layer"] == 3) & (summary["column"] == "answer")]["mean"].item()
    assert last > 0.9
    assert set(many.to_pandas()["clip"]) == {0, 1, 2}
    assert isinstance(many.plot(), Figure)
