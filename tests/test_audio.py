"""workbench.audio: decoding, the 30 s policy, log-mel against the golden fixture and transformers,
token arithmetic against the official counts, and one clear error for each bad input."""
from __future__ import annotations

import dataclasses
import io
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from workbench import audio as wa
from workbench.audio import AudioChunk, load_audio, log_mel
from workbench.errors import AudioError

needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed")

LIBRI = "1272-128104-0000.flac"
GLASS = "glass-breaking-151256.mp3"

# Float32 FFTs differ in the last bits between CPUs (Intel, AMD, ARM): a log-mel differed from the
# golden one by 1.66e-5 at 2 of 240,000 elements on an Intel Xeon, where an AMD EPYC was within
# 1e-5. 1e-4 on log-mel values in [-1.5, 1.5] holds on any CPU and is far below anything visible.
MEL_ATOL = 1e-4
# The same torch code on one machine, batched or not: the FFT plan may still change with the
# batch shape, so leave a little room over bit-equality.
MEL_SAME_CODE_ATOL = 1e-5


@pytest.fixture(scope="module")
def clips(tiny_dir: Path) -> Path:
    return tiny_dir / "clips"


@pytest.fixture(scope="module")
def libri(clips: Path) -> np.ndarray:
    return load_audio(clips / LIBRI)


@pytest.fixture(scope="module")
def music_full(clips: Path) -> np.ndarray:
    """96.6 s: longer than the window, so it comes back as chunks and is joined here."""
    return np.concatenate([c.audio for c in load_audio(clips / "music.wav", on_long="chunk")])


def test_constants_describe_the_whisper_window():
    assert (wa.SAMPLE_RATE, wa.N_FFT, wa.HOP_LENGTH, wa.CHUNK_SECONDS) == (16000, 400, 160, 30)
    assert wa.N_SAMPLES == 480_000 == wa.CHUNK_SECONDS * wa.SAMPLE_RATE
    assert wa.N_FRAMES == 3000 == wa.N_SAMPLES // wa.HOP_LENGTH
    assert wa.SECONDS_PER_TOKEN == pytest.approx(0.04)


# ---------------------------------------------------------------------------------------------
# log_mel against the golden fixture and transformers


def test_log_mel_matches_golden_case0(libri, golden_arrays):
    mel = log_mel(libri)
    assert mel.shape == (80, 3000) and mel.dtype == torch.float32
    np.testing.assert_allclose(mel.numpy(), golden_arrays["case0_mel"][0], atol=MEL_ATOL, rtol=0)


@needs_ffmpeg
def test_log_mel_matches_golden_case1_with_the_official_ffmpeg_decoding(clips, golden_arrays):
    audio = load_audio(clips / GLASS, decoder="ffmpeg")
    np.testing.assert_allclose(log_mel(audio).numpy(), golden_arrays["case1_mel"][0], atol=MEL_ATOL, rtol=0)


def test_default_decoder_is_close_to_golden_case1_but_not_identical(clips, golden_arrays):
    """The documented cost of soxr instead of ffmpeg's resampler: small, and only near 8 kHz."""
    audio = load_audio(clips / GLASS)
    assert len(audio) == 64512  # the same length as the official decoding, so the same tokens
    diff = np.abs(log_mel(audio).numpy() - golden_arrays["case1_mel"][0])[:, : wa.mel_frames(len(audio))]
    assert 1e-3 < diff.max() < 0.3
    assert diff.mean() < 2e-3
    assert diff[:60].max() < 0.1  # the lower mel bins barely move


def test_log_mel_batch_matches_golden_case2(libri, clips, golden_arrays):
    """The music fills the whole window, so its last frames check the STFT's reflect padding."""
    with pytest.warns(UserWarning, match="96.63 s long: keeping the first 30 s"):
        music = load_audio(clips / "music.wav", on_long="truncate")
    mel = log_mel([libri, music])
    assert mel.shape == (2, 80, 3000)
    np.testing.assert_allclose(mel.numpy(), golden_arrays["case2_mel"], atol=MEL_ATOL, rtol=0)


def test_batch_uses_a_per_clip_maximum(libri):
    quiet = libri[: 3 * wa.SAMPLE_RATE] * 1e-3  # alone, its floor (max - 8) is far below the loud clip's
    batch = log_mel([libri, quiet])
    torch.testing.assert_close(batch[0], log_mel(libri), atol=MEL_SAME_CODE_ATOL, rtol=0)
    torch.testing.assert_close(batch[1], log_mel(quiet), atol=MEL_SAME_CODE_ATOL, rtol=0)
    assert batch[1].max() < batch[0].max() - 1  # the clips were not normalised together


def test_batch_as_list_2d_array_tensor_and_chunks_agree(libri):
    clip = libri[: 5 * wa.SAMPLE_RATE]
    from_list = log_mel([clip, clip[::-1].copy()])
    from_array = log_mel(np.stack([clip, clip[::-1]]))
    from_tensor = log_mel(torch.from_numpy(np.stack([clip, clip[::-1]])).double(), device="cpu")
    from_chunks = log_mel([AudioChunk(clip, 0.0), AudioChunk(clip[::-1].copy(), 5.0)])
    for other in (from_array, from_tensor, from_chunks):
        torch.testing.assert_close(other, from_list, atol=MEL_SAME_CODE_ATOL, rtol=0)


@pytest.mark.parametrize("n_mels", [80, 128])
def test_log_mel_equals_whisper_feature_extractor(n_mels, shared_audio, music_full):
    transformers = pytest.importorskip("transformers")
    # the second clip fills the window (reflect padding at its end), the first is zero-padded
    extractor = transformers.WhisperFeatureExtractor(feature_size=n_mels)
    clips = [load_audio(shared_audio / "jfk.flac"), music_full[wa.N_SAMPLES : 2 * wa.N_SAMPLES]]
    expected = extractor(clips, sampling_rate=wa.SAMPLE_RATE, return_tensors="np")["input_features"]
    mel = log_mel(clips, n_mels=n_mels)
    assert mel.shape == (2, n_mels, 3000)
    np.testing.assert_allclose(mel.numpy(), expected, atol=MEL_ATOL, rtol=0)  # numpy FFT vs torch FFT


def test_mel_filters_are_cached_per_size_and_device():
    assert wa.mel_filters(80, "cpu") is wa.mel_filters(80, torch.device("cpu"))
    assert wa.mel_filters(128, torch.device("cpu")).shape == (128, wa.N_FFT // 2 + 1)


# ---------------------------------------------------------------------------------------------
# load_audio: sources, decoders, rates


def test_every_source_kind_gives_the_same_samples(clips, libri):
    path = clips / LIBRI
    raw = path.read_bytes()
    samples, rate = soundfile.read(path, dtype="int16")
    same = [
        load_audio(str(path)),
        load_audio(raw),
        load_audio(io.BytesIO(raw)),
        load_audio((samples, rate)),
        load_audio(samples, src_sr=rate),
        load_audio(torch.from_numpy(samples.astype(np.float32) / 32768), src_sr=rate),
    ]
    assert libri.dtype == np.float32 and libri.ndim == 1
    for audio in same:
        np.testing.assert_array_equal(audio, libri)


@needs_ffmpeg
def test_ffmpeg_decoder_of_16k_speech_equals_soundfile(clips, libri):
    np.testing.assert_array_equal(load_audio(clips / LIBRI, decoder="ffmpeg"), libri)


@needs_ffmpeg
def test_ffmpeg_decoding_of_bytes_equals_decoding_of_the_file(shared_audio):
    """es.mp3 has gapless (encoder delay) info that ffmpeg ignores when it reads a pipe."""
    path = shared_audio / "es.mp3"
    from_file = load_audio(path, decoder="ffmpeg")
    with open(path, "rb") as f:
        np.testing.assert_array_equal(load_audio(f, decoder="ffmpeg"), from_file)
    piped = subprocess.run(
        ["ffmpeg", "-nostdin", "-i", "pipe:0", "-f", "s16le", "-ac", "1", "-ar", "16000", "-"],
        input=path.read_bytes(), capture_output=True, check=True,
    ).stdout
    assert len(piped) // 2 != len(from_file)  # why bytes go through a temporary file


@needs_ffmpeg
def test_stereo_44k_is_resampled_close_to_ffmpeg(shared_audio):
    auto = load_audio(shared_audio / "jfk.flac")
    official = load_audio(shared_audio / "jfk.flac", decoder="ffmpeg")
    assert auto.shape == official.shape == (11 * wa.SAMPLE_RATE,)
    assert np.sqrt(np.mean((auto - official) ** 2)) < 1e-4  # measured 3.0e-5 (module docstring)
    assert np.abs(auto - official).max() < 5e-3


def test_channels_first_array_is_mixed_to_mono(shared_audio):
    frames, rate = soundfile.read(shared_audio / "jfk.flac", dtype="float32")  # (samples, 2)
    np.testing.assert_array_equal(load_audio((frames.T, rate)), load_audio(shared_audio / "jfk.flac"))


@needs_ffmpeg
def test_ffmpeg_decoder_on_an_array_matches_ffmpeg_on_the_same_file(tmp_path):
    rng = np.random.default_rng(0)
    stereo = (0.1 * rng.standard_normal((2, 48000))).astype(np.float32)
    soundfile.write(tmp_path / "noise.wav", stereo.T, 48000, subtype="FLOAT")
    from_array = load_audio(stereo, src_sr=48000, decoder="ffmpeg")
    np.testing.assert_array_equal(from_array, load_audio(tmp_path / "noise.wav", decoder="ffmpeg"))
    assert len(from_array) == wa.SAMPLE_RATE


def test_other_target_rate(libri):
    audio = load_audio((libri, wa.SAMPLE_RATE), sr=8000)
    assert len(audio) == len(libri) // 2


@needs_ffmpeg
def test_auto_falls_back_to_ffmpeg_for_formats_soundfile_cannot_read(tmp_path, clips):
    m4a = tmp_path / "speech.m4a"
    subprocess.run(["ffmpeg", "-nostdin", "-i", str(clips / LIBRI), "-t", "2", "-c:a", "aac", str(m4a)],
                   capture_output=True, check=True)
    with pytest.raises(AudioError, match="soundfile cannot decode .*speech.m4a.*decoder='ffmpeg'"):
        load_audio(m4a, decoder="soundfile")
    np.testing.assert_array_equal(load_audio(m4a), load_audio(m4a, decoder="ffmpeg"))


# ---------------------------------------------------------------------------------------------
# The 30 s policy


def test_long_audio_is_an_error_by_default(clips):
    with pytest.raises(AudioError, match=r"96\.63 s long.*on_long='truncate'.*on_long='chunk'"):
        load_audio(clips / "music.wav")


def test_truncate_keeps_the_first_30_s_and_warns(music_full):
    with pytest.warns(UserWarning, match=r"96\.63 s long.*dropping 66\.63 s"):
        cut = load_audio((music_full, wa.SAMPLE_RATE), on_long="truncate")
    np.testing.assert_array_equal(cut, music_full[: wa.N_SAMPLES])


def test_chunk_returns_windows_that_cover_every_sample(music_full):
    chunks = load_audio((music_full, wa.SAMPLE_RATE), on_long="chunk")
    assert isinstance(chunks, list) and all(isinstance(c, AudioChunk) for c in chunks)
    assert [c.offset_s for c in chunks] == [0.0, 30.0, 60.0, 90.0]
    assert all(len(c.audio) <= wa.N_SAMPLES for c in chunks)
    np.testing.assert_array_equal(np.concatenate([c.audio for c in chunks]), music_full)
    assert log_mel(chunks).shape == (4, 80, 3000)
    with pytest.raises(dataclasses.FrozenInstanceError):
        chunks[0].offset_s = 1.0


def test_chunk_of_short_audio_is_a_list_of_one(libri):
    (only,) = load_audio((libri, wa.SAMPLE_RATE), on_long="chunk")
    assert only.offset_s == 0.0
    np.testing.assert_array_equal(only.audio, libri)


def test_exactly_30_s_is_not_long(music_full):
    window = music_full[: wa.N_SAMPLES]
    np.testing.assert_array_equal(load_audio((window, wa.SAMPLE_RATE)), window)


def test_log_mel_refuses_to_cut_long_audio(music_full):
    with pytest.raises(AudioError, match=r"96\.63 s long.*does not cut audio.*on_long="):
        log_mel(music_full)


# ---------------------------------------------------------------------------------------------
# Token arithmetic


@needs_ffmpeg
def test_token_counts_match_the_official_counts_for_every_golden_case(golden, clips):
    for case in golden["cases"]:
        for j, name in enumerate(case["clips"]):
            n = len(np.concatenate([c.audio for c in load_audio(clips / name, decoder="ffmpeg", on_long="chunk")]))
            T, n_tok = case["input_audio_lengths"][j]
            assert wa.encoder_frames(n) == T, (case["name"], name)
            assert wa.audio_tokens(n) == n_tok, (case["name"], name)
            assert wa.audio_span_tokens(n) == case["audio_span_tokens"][j], (case["name"], name)


def test_token_arithmetic_follows_the_reference_formula():
    assert wa.mel_frames(159) == 0 and wa.mel_frames(160) == 1
    assert wa.mel_frames(10 * wa.N_SAMPLES) == wa.N_FRAMES  # the official code cuts at 30 s
    assert wa.encoder_frames(wa.N_SAMPLES) == 1500
    assert wa.audio_span_tokens(wa.N_SAMPLES) == 752  # reference: a 30 s clip is 750 + 2
    for n in range(0, 5000, 7):
        mel = n // 160
        t = (mel - 1) // 2 + 1
        assert wa.audio_span_tokens(n) == (t - 2) // 2 + 1 + 2


def test_token_times_are_40_ms_each_and_round_trip():
    assert wa.token_to_seconds(0) == (0.0, 0.04)
    assert wa.token_to_seconds(3) == (0.12, 0.16)
    assert wa.token_to_seconds(749)[1] == wa.CHUNK_SECONDS
    for k in range(750):
        start, end = wa.token_to_seconds(k)
        assert wa.seconds_to_token(start) == k
        assert wa.seconds_to_token((start + end) / 2) == k
        assert end == wa.token_to_seconds(k + 1)[0]
    # the reference grounding: "middle classes" at 2.33-3.26 s
    assert (wa.seconds_to_token(2.33), wa.seconds_to_token(3.26)) == (58, 81)


@pytest.mark.parametrize("bad", [-1, 1.5, "480000", True])
def test_token_arithmetic_rejects_bad_counts(bad):
    with pytest.raises(ValueError, match="must be a non-negative integer"):
        wa.audio_span_tokens(bad)


@pytest.mark.parametrize("bad", [-0.1, float("nan"), float("inf")])
def test_seconds_to_token_rejects_bad_times(bad):
    with pytest.raises(ValueError, match="finite, non-negative number of seconds"):
        wa.seconds_to_token(bad)
    with pytest.raises(ValueError, match="non-negative integer"):
        wa.token_to_seconds(-1)


# ---------------------------------------------------------------------------------------------
# Bad input: one clear error each


@pytest.mark.parametrize("empty", [np.zeros(0, np.float32), b""])
def test_empty_audio(empty):
    with pytest.raises(AudioError, match="empty"):
        load_audio(empty, src_sr=16000) if isinstance(empty, np.ndarray) else load_audio(empty)


def test_empty_audio_file(tmp_path):
    soundfile.write(tmp_path / "silence.wav", np.zeros(0, np.float32), 16000)
    with pytest.raises(AudioError, match=r"silence\.wav' holds no samples"):
        load_audio(tmp_path / "silence.wav")


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_samples(value):
    audio = np.zeros(1600, np.float32)
    audio[100] = value
    with pytest.raises(AudioError, match=r"1 NaN or infinite samples \(the first at index 100\).*nan_to_num"):
        load_audio(audio, src_sr=16000)
    with pytest.raises(AudioError, match="NaN or infinite.*nan_to_num"):
        log_mel(audio)


@pytest.mark.parametrize("decoder", ["auto", pytest.param("ffmpeg", marks=needs_ffmpeg)])
def test_corrupt_file(tmp_path, decoder):
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEthis is not audio" * 10)
    with pytest.raises(AudioError, match=r"cannot decode '.*broken\.wav'"):
        load_audio(bad, decoder=decoder)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"audio file not found: '.*nowhere\.wav'"):
        load_audio(tmp_path / "nowhere.wav")
    with pytest.raises(AudioError, match="is a directory"):
        load_audio(tmp_path)


def test_missing_ffmpeg_is_named(monkeypatch, clips):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(AudioError, match="with ffmpeg: ffmpeg is not on PATH. Install ffmpeg"):
        load_audio(clips / LIBRI, decoder="ffmpeg")


@pytest.mark.parametrize("src", [42, None, [0.0, 0.1], {"audio": 1}])
def test_unsupported_source_type(src):
    with pytest.raises(TypeError, match="cannot load audio from a .*src_sr="):
        load_audio(src)


def test_unsupported_log_mel_input_and_text_mode_file(tmp_path, clips):
    with pytest.raises(TypeError, match="decode files with load_audio first"):
        log_mel(str(clips / LIBRI))
    with open(clips / LIBRI, encoding="latin-1") as text:
        with pytest.raises(TypeError, match=r"binary mode \('rb'\)"):
            load_audio(text)
    with pytest.raises(TypeError, match="float or signed-integer PCM"):
        load_audio(np.zeros(10, dtype=bool), src_sr=16000)


def test_samples_by_channels_array_is_refused_with_advice():
    with pytest.raises(AudioError, match=r"shape \(16000, 2\).*more channels than samples.*audio\.T"):
        load_audio(np.zeros((16000, 2), np.float32), src_sr=16000)
    with pytest.raises(AudioError, match=r"1-D \(samples,\) or 2-D \(channels, samples\)"):
        load_audio(np.zeros((1, 2, 100), np.float32), src_sr=16000)


@pytest.mark.parametrize("rate", [0, -16000, 16000.5, "16k", None, True])
def test_bad_sample_rates(rate):
    if rate is None:  # missing: an array needs its rate
        with pytest.raises(ValueError, match="needs its sample rate: pass src_sr="):
            load_audio(np.zeros(100, np.float32))
        return
    with pytest.raises(ValueError, match=r"is not a sample rate: give a positive whole number of Hz"):
        load_audio(np.zeros(100, np.float32), src_sr=rate)
    with pytest.raises(ValueError, match=r"sr=.* is not a sample rate"):
        load_audio(np.zeros(100, np.float32), sr=rate, src_sr=16000)


def test_ambiguous_rate_arguments():
    with pytest.raises(TypeError, match=r"got \(rate, array\).*pass \(array, rate\)"):
        load_audio((16000, np.zeros(100, np.float32)))
    with pytest.raises(ValueError, match="the tuple says 16000 Hz but src_sr=8000"):
        load_audio((np.zeros(100, np.float32), 16000), src_sr=8000)
    with pytest.raises(ValueError, match="src_sr is for arrays only"):
        load_audio(b"RIFF", src_sr=16000)


def test_bad_options():
    with pytest.raises(ValueError, match=r"decoder='sox' is not one of"):
        load_audio(np.zeros(100, np.float32), src_sr=16000, decoder="sox")
    with pytest.raises(ValueError, match=r"on_long='drop' is not one of"):
        load_audio(np.zeros(100, np.float32), src_sr=16000, on_long="drop")
    with pytest.raises(ValueError, match="n_mels=0 must be a positive integer"):
        log_mel(np.zeros(100, np.float32), n_mels=0)


def test_log_mel_bad_batches():
    with pytest.raises(AudioError, match="empty batch"):
        log_mel([])
    with pytest.raises(AudioError, match="clip 1 is empty"):
        log_mel([np.zeros(10, np.float32), np.zeros(0, np.float32)])
    with pytest.raises(AudioError, match=r"clip 0 has shape \(2, 10\)"):
        log_mel([np.zeros((2, 10), np.float32)])
    with pytest.raises(AudioError, match=r"got shape \(1, 2, 3\)"):
        log_mel(np.zeros((1, 2, 3), np.float32))
