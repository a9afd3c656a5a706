"""Causal tracing with corrupted audio.

Corruptions are checked against direct numpy computations (SNR, band energy, roll, cut/pad);
restoring is checked at its ends (every position of a layer → the clean score, none → the corrupted
score, both against plain forward passes) and cell by cell (a sweep's cell is the single restore it
stands for); many clips average to the mean of the single traces, with a CI around it. Whisper's
encoder (tiny.en on jfk.flac) is checked against transformers' own forward: every frame restored →
the clean score, none → the corrupted one, a cell → a forward hook written in the test.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch
from matplotlib.figure import Figure
from tiny_models import WHISPER_PREFIX

import workbench as wb
from workbench.analysis.tracing import (
    CausalTrace,
    _Runs,
    causal_trace,
    causal_trace_many,
    corrupt_audio,
    measured_snr_db,
    restored_score,
)
from workbench.audio import SAMPLE_RATE
from workbench.errors import AudioError, PatchingError
from workbench.models import registry
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


# --- Whisper: the encoder, frames binned by time ----------------------------------------------------

TINY_EN_PREFIX = "<|startoftranscript|><|notimestamps|>"     # English-only: no language or task tag
JFK = " And so my fellow Americans ask not what your country can do for you, ask what you can do for your country."


@pytest.fixture(scope="module")
def tiny_en():
    try:
        registry.locate(registry.lookup("whisper-tiny.en"))
    except registry.MissingPackageError as error:
        pytest.skip(str(error))
    return wb.load("whisper-tiny.en")


@pytest.fixture(scope="module")
def jfk(tiny_en, shared_audio) -> tuple[np.ndarray, np.ndarray]:
    clean = tiny_en.read_audio(str(shared_audio / "jfk.flac"))
    return clean, corrupt_audio(clean, "noise", snr_db=0, seed=0)


@pytest.fixture(scope="module")
def encoder_runs(tiny_en, jfk) -> _Runs:
    """The clean and corrupted runs, built once (4 layers recorded), for restores at will."""
    return _Runs.build(tiny_en, TINY_EN_PREFIX, *jfk, tiny_en.adapter.encoder, [0, 1, 2, 3], JFK, 48, None, 0)


@torch.no_grad()
def _hf_score(whisper, audio: np.ndarray, layer: int | None = None, frames: np.ndarray | None = None,
              clean_stream: dict | None = None) -> float:
    """log p(JFK | prefix) from transformers' own WhisperForConditionalGeneration forward; with
    `clean_stream`, encoder layer `layer`'s output is recorded into it (frames None) or overwritten
    at `frames` from it, by a forward hook written here."""
    prefix, answer = whisper.tokenizer.encode(TINY_EN_PREFIX, add_special_tokens=False), whisper.adapter.encode_text(JFK)
    features = whisper.processor.feature_extractor(audio, sampling_rate=SAMPLE_RATE, return_tensors="pt").input_features

    def hook(module, args, output):
        hidden = output[0] if isinstance(output, tuple) else output
        if frames is None:
            clean_stream["x"] = hidden.clone()
            return None
        hidden = hidden.clone()
        hidden[:, frames] = clean_stream["x"][:, frames]
        return (hidden, *output[1:]) if isinstance(output, tuple) else hidden

    handle = whisper.model.model.encoder.layers[layer].register_forward_hook(hook) if clean_stream is not None else None
    try:
        logits = whisper.model(input_features=features, decoder_input_ids=torch.tensor([prefix + answer])).logits[0]
    finally:
        if handle is not None:
            handle.remove()
    rows = logits[len(prefix) - 1:len(prefix) - 1 + len(answer)].float().log_softmax(-1)
    return float(rows[torch.arange(len(answer)), torch.tensor(answer)].double().sum())


@pytest.mark.whisper
@pytest.mark.filterwarnings("ignore:the audio array peaks")   # jfk.flac peaks at 1.015
def test_whisper_restoring_every_frame_gives_the_clean_score_and_none_the_corrupted(tiny_en, jfk, encoder_runs):
    clean, corrupt = _hf_score(tiny_en, jfk[0]), _hf_score(tiny_en, jfk[1])
    assert clean - corrupt > 3       # noise at 0 dB costs tiny.en's transcript of JFK
    assert encoder_runs.clean == pytest.approx(clean, abs=1e-3)
    assert encoder_runs.corrupt == pytest.approx(corrupt, abs=1e-3)
    assert encoder_runs.n_positions == 1500 and encoder_runs.clip_frames == 550     # 11 s of 30 s
    for layer in range(4):
        assert encoder_runs.restored(layer, np.arange(1500)) == pytest.approx(encoder_runs.clean, abs=1e-6)
        assert encoder_runs.restored(layer, np.array([], dtype=int)) == encoder_runs.corrupt
    assert restored_score(tiny_en, TINY_EN_PREFIX, *jfk, layer=2, positions="all",
                          continuation=JFK) == pytest.approx(clean, abs=1e-3)


@pytest.mark.whisper
@pytest.mark.filterwarnings("ignore:the audio array peaks")   # jfk.flac peaks at 1.015
def test_whisper_encoder_trace_is_its_hand_patched_restores(tiny_en, jfk, encoder_runs):
    trace = causal_trace(tiny_en, TINY_EN_PREFIX, *jfk, layers=[1, 3], bins=4, continuation=JFK)
    assert trace.stack == "encoder" and trace.layers == (1, 3)
    assert trace.columns == ("t0", "t1", "t2", "t3", "pad") and trace.kinds == ("audio",) * 4 + ("padding",)
    # the bins tile the clip's 550 frames of 20 ms in time, the padding the rest of the 30 s window
    np.testing.assert_array_equal(np.concatenate([np.array(p) for p in trace.positions]), np.arange(1500))
    starts, ends = zip(*trace.seconds)
    assert starts[0] == 0 and starts[1:] == ends[:-1] and ends[3] == 11.0 and ends[4] == 30.0
    assert trace.column_labels()[-1] == "pad 11.00–30 s"
    assert (trace.clean, trace.corrupt) == (encoder_runs.clean, encoder_runs.corrupt)
    # a cell is the restore it stands for, and a forward hook written here gives the same score
    recorded: dict = {}
    _hf_score(tiny_en, jfk[0], 1, None, recorded)
    for column in ("t1", "pad"):
        j = trace.columns.index(column)
        frames = np.array(trace.positions[j])
        assert trace.scores[0, j] == pytest.approx(encoder_runs.restored(1, frames), abs=1e-6)
        assert trace.scores[0, j] == pytest.approx(_hf_score(tiny_en, jfk[1], 1, frames, recorded), abs=1e-3)
    # running the layers after the restored one (`encode_after`) is re-encoding all with the patch hooked
    rehooked = dataclasses.replace(encoder_runs, corrupt_layers={})
    assert rehooked.restored(1, frames) == pytest.approx(encoder_runs.restored(1, frames), abs=1e-4)
    # the seconds matter: bins of the same layer recover different shares
    recovery = trace.recovery[:, :4]
    assert (np.ptp(recovery, axis=1) > 0.1).all(), trace.to_pandas()
    table = trace.to_pandas()
    assert set(table["kind"]) == {"audio", "padding"} and len(table) == 10
    assert isinstance(trace.plot(), Figure)


@pytest.mark.whisper
@pytest.mark.filterwarnings("ignore:the audio array peaks")   # jfk.flac peaks at 1.015
def test_whisper_decoder_trace_reads_the_corrupted_audio_until_the_last_layer(tiny_en, jfk, encoder_runs):
    runs = _Runs.build(tiny_en, TINY_EN_PREFIX, *jfk, tiny_en.adapter.sequence, [0, 3], JFK, 48, None, 0)
    everything = np.arange(runs.n_positions)
    assert runs.restored(3, everything) == pytest.approx(encoder_runs.clean, abs=1e-6)
    assert runs.restored(0, everything) < encoder_runs.clean - 1     # later cross-attention reads the noise
    assert runs.restored(0, everything[:0]) == pytest.approx(encoder_runs.corrupt, abs=1e-6)
    trace = causal_trace(tiny_en, TINY_EN_PREFIX, *jfk, stack="decoder", layers=[0, 3], continuation=JFK)
    assert trace.stack == "decoder" and trace.columns == ("tags", "answer")     # no audio positions, no bins


def test_whisper_many_clips_and_bad_requests(tiny_whisper, noise):
    clips = [noise, noise[8_000:24_000]]
    many = causal_trace_many(tiny_whisper, WHISPER_PREFIX, clips, "noise", layers=[0, 1], bins=2,
                             continuations=[" hi", " ask"])
    assert [t.columns for t in many.traces] == [("t0", "t1", "pad")] * 2
    assert [t.seconds[-1] for t in many.traces] == [(1.5, 30.0), (1.0, 30.0)]
    summary = many.summary("delta")
    assert len(summary) == 6 and (summary["n"] == 2).all() and isinstance(many.plot("delta"), Figure)
    with pytest.raises(AudioError, match="gives 50 encoder frames .* both clips need the same length"):
        causal_trace(tiny_whisper, WHISPER_PREFIX, noise, noise[:16_000], continuation=" hi")
    with pytest.raises(PatchingError, match="bins=100: give an int from 1 to the clip's 75 encoder frames"):
        causal_trace(tiny_whisper, WHISPER_PREFIX, noise, "noise", bins=100, continuation=" hi")
    with pytest.raises(PatchingError, match="stack='llm': choose 'encoder' .* or 'decoder'"):
        causal_trace(tiny_whisper, WHISPER_PREFIX, noise, "noise", stack="llm", continuation=" hi")


def test_the_qwen_audio_encoder_can_be_traced_too(tiny_qwen, noise, noisy):
    encoder = tiny_qwen.adapter.encoder
    runs = _Runs.build(tiny_qwen, ASR, noise, noisy, encoder, [0], CONTINUATION, 48, None, 0)
    assert runs.n_positions == runs.clip_frames == 75                  # no padding: no "pad" column
    assert [c[0] for c in runs.columns(3)] == ["t0", "t1", "t2"]
    assert runs.restored(0, np.arange(75)) == pytest.approx(_forward_score(tiny_qwen, noise), abs=1e-4)
    assert runs.restored(0, np.arange(0)) == pytest.approx(_forward_score(tiny_qwen, noisy), abs=1e-4)


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
