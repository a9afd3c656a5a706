"""Bad input, one clear error each (issue #10): every case checks the exception type and that the
message names both the problem and the fix; file cases also check that the input file is unchanged
and nothing half-written is left beside it. Then the capabilities the fixes added: (array, rate)
audio for every family, and on_truncated="warn".

Models load once per module: the tiny official-layout Qwen-Audio (conftest `tiny_qwen`), the tiny
random Whisper (`tiny_whisper`), a multilingual variant of it, and a tiny random Qwen2-Audio.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile
import torch

import workbench as wb
from workbench.audio import MIN_SAMPLES, audio_tokens, load_audio
from workbench.errors import (
    AudioError,
    CheckpointError,
    ContextTooLongError,
    LongAudioError,
    MissingWhisperTagsWarning,
    TraceRequestError,
    TruncatedAudioError,
    UnknownTagWarning,
)
from workbench.models.base import ModelInputs
from workbench.models.qwen2_audio import MIN_SAMPLES as QWEN2_MIN_SAMPLES
from workbench.models.qwen_audio import QwenAudio
from workbench.models.whisper import STANDARD_PREFIX

CUT_BYTES = 93_702   # bytes kept of a longer 16-bit WAV: the example
QWEN2_PROMPT = "<|audio_bos|><|AUDIO|><|audio_eos|>What does the person say?"


# --- fixtures -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def prompt():
    return wb.preset("librispeech", lang="en")


@pytest.fixture(scope="module")
def speech(tiny_clip) -> np.ndarray:
    """1272-128104-0000 as 16 kHz samples, cut to 1.5 s: short keeps the module fast."""
    return load_audio(tiny_clip)[:24_000]


@pytest.fixture(scope="module")
def multilingual_whisper(tmp_path_factory):
    """The tiny random Whisper, declared multilingual in its generation config (as whisper-base is)."""
    from tiny_models import write_whisper

    directory = write_whisper(tmp_path_factory.mktemp("whisper_multilingual"))
    config_file = directory / "generation_config.json"
    config = json.loads(config_file.read_text()) if config_file.exists() else {}
    config.pop("_from_model_config", None)   # with it set, transformers drops the extra key on loading
    config_file.write_text(json.dumps({**config, "is_multilingual": True}))
    return wb.load(directory)


@pytest.fixture(scope="module")
def tiny_qwen2(tmp_path_factory):
    from tiny_models import write_qwen2_audio

    return wb.load(write_qwen2_audio(tmp_path_factory.mktemp("qwen2_audio")))


@pytest.fixture(scope="module")
def models(tiny_qwen, tiny_whisper, tiny_qwen2) -> dict[str, Any]:
    return {"qwen": tiny_qwen, "whisper": tiny_whisper, "qwen2": tiny_qwen2}


# --- bad audio files --------------------------------------------------------------------------------

def _wav_of(source: Path, folder: Path) -> Path:
    samples, rate = soundfile.read(source, dtype="int16")
    path = folder / "full.wav"
    soundfile.write(path, samples, rate, subtype="PCM_16")
    return path


def _cut(path: Path, n_bytes: int, name: str) -> Path:
    cut = path.with_name(name)
    cut.write_bytes(path.read_bytes()[:n_bytes])
    return cut


def truncated_wav(folder: Path, shared: Path) -> Path:
    """jfk.flac (44.1 kHz stereo, 11 s) as a 16-bit WAV, cut to its first 93,702 bytes."""
    return _cut(_wav_of(shared / "jfk.flac", folder), CUT_BYTES, "truncated.wav")


def truncated_flac(folder: Path, shared: Path) -> Path:
    data = (Path(wb.__file__).parent / "assets" / "demo" / "speech_en.flac").read_bytes()
    cut = folder / "truncated.flac"
    cut.write_bytes(data[: len(data) // 2])
    return cut


def empty_file(folder: Path, shared: Path) -> Path:
    (folder / "empty.wav").write_bytes(b"")
    return folder / "empty.wav"


def text_as_wav(folder: Path, shared: Path) -> Path:
    (folder / "notes.wav").write_text("these are meeting notes, not audio\n" * 20)
    return folder / "notes.wav"


def loud_float_wav(folder: Path, shared: Path) -> Path:
    """A float WAV holding int16-scale values: float files can hold any value."""
    samples, rate = soundfile.read(shared / "1272-128104-0000.flac", dtype="int16")
    soundfile.write(folder / "loud.wav", samples.astype(np.float32), rate, subtype="FLOAT")
    return folder / "loud.wav"


def a_directory(folder: Path, shared: Path) -> Path:
    (folder / "clips").mkdir()
    return folder / "clips"


TRUNCATED = r"truncated: its (WAV|FLAC) header promises [\d,]+ frames \([\d.]+ s at \d+ Hz\) but only [\d,]+"
FILE_CASES = [
    # (id, make the file, what to call on it, exception, the problem, the fix)
    ("truncated-wav-auto", truncated_wav, lambda p, m: load_audio(p), TruncatedAudioError,
     TRUNCATED + r".*\(0\.53 s\) are there, so 10\.47 s are missing", "get the complete file again, or pass "
     "on_truncated='warn'"),
    ("truncated-wav-ffmpeg", truncated_wav, lambda p, m: load_audio(p, decoder="ffmpeg"), TruncatedAudioError,
     TRUNCATED + r" \(0\.53 s\)", "on_truncated='warn'"),
    ("truncated-wav-bytes", truncated_wav, lambda p, m: load_audio(p.read_bytes()), TruncatedAudioError,
     "the audio bytes is " + TRUNCATED, "on_truncated='warn'"),
    ("truncated-flac-auto", truncated_flac, lambda p, m: load_audio(p), TruncatedAudioError,
     TRUNCATED.replace("(WAV|FLAC)", "FLAC"), "on_truncated='warn'"),
    ("truncated-flac-ffmpeg", truncated_flac, lambda p, m: load_audio(p, decoder="ffmpeg"), TruncatedAudioError,
     TRUNCATED, "on_truncated='warn'"),
    ("truncated-wav-generate", truncated_wav, lambda p, m: m["qwen"].generate(wb.preset("librispeech"), p),
     TruncatedAudioError, TRUNCATED,
     r"wb\.load\(\.\.\., audio_on_truncated='warn'\) \(or take model\.with_options\(audio_on_truncated='warn'\)\)"),
    ("truncated-wav-whisper", truncated_wav, lambda p, m: m["whisper"].generate(STANDARD_PREFIX, p),
     TruncatedAudioError, TRUNCATED, r"wb\.load_audio\(path, on_truncated='warn'\) and pass the array"),
    ("empty-file", empty_file, lambda p, m: load_audio(p), AudioError, r"empty\.wav' is empty \(0 bytes\)",
     "write or download it again"),
    ("empty-file-model", empty_file, lambda p, m: m["qwen"].inputs(wb.preset("librispeech"), p), AudioError,
     r"is empty \(0 bytes\)", "write or download it again"),
    ("int16-scale-float-wav", loud_float_wav, lambda p, m: load_audio(p), AudioError,
     r"loud\.wav' peaks at 1\d,\d\d\d, far outside the \[-1, 1\] full scale", r"Divide by 32768 \(audio / 32768\)"),
    ("directory", a_directory, lambda p, m: load_audio(p), AudioError, "is a directory, not an audio file",
     "pass the path of a file inside it"),
    ("not-audio", text_as_wav, lambda p, m: load_audio(p), AudioError,
     r"cannot decode '.*notes\.wav': not a readable audio file", r"Check that it is an audio file \(wav, flac"),
    ("not-audio-ffmpeg", text_as_wav, lambda p, m: load_audio(p, decoder="ffmpeg"), AudioError,
     "not a readable audio file", "re-export or download it again"),
]


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(folder.rglob("*"))}


@pytest.mark.parametrize("make, call, error, problem, fix", [c[1:] for c in FILE_CASES],
                         ids=[c[0] for c in FILE_CASES])
def test_bad_audio_file(tmp_path, shared_audio, models, make, call, error, problem, fix):
    folder = tmp_path / "input"
    folder.mkdir()
    path = make(folder, shared_audio)
    before = _digest(folder)
    with pytest.raises(error, match=problem) as raised:
        call(path, models)
    assert raised.match(fix)
    assert _digest(folder) == before   # the file unchanged, nothing written beside it


# --- bad arrays and sources ----------------------------------------------------------------------

def _ones(n: int) -> np.ndarray:
    return np.full(n, 0.1, np.float32)


ARRAY_CASES = [
    # (id, family, audio, exception, the problem, the fix)
    ("rate-array-order", "qwen", (8000, _ones(8000)), TypeError, r"audio=\(rate, array\)",
     r"pass \(array, rate\) instead"),
    ("rate-array-order-whisper", "whisper", (8000, _ones(8000)), TypeError, r"\(rate, array\)", r"\(array, rate\)"),
    ("scaled-x1000", "qwen", "x1000", AudioError, r"peaks at 3\d\d, far outside the \[-1, 1\] full scale",
     r"int16 PCM values stored as float\. Divide by 32768.*np\.abs\(audio\)\.max\(\)"),
    ("scaled-x10", "qwen2", "x10", AudioError, r"peaks at 3\.\d\d, far outside the \[-1, 1\]",
     r"normalise it: audio / np\.abs\(audio\)\.max\(\)"),
    ("nan", "qwen", "nan", AudioError, r"1 NaN or infinite samples \(the first at index 7\)", r"np\.nan_to_num"),
    ("empty-array", "whisper", np.zeros(0, np.float32), AudioError, "holds no samples", "give at least one sample"),
    ("1-sample", "qwen", _ones(1), AudioError, r"has 1 samples \(0\.1 ms at 16 kHz\), too short",
     rf"at least {MIN_SAMPLES} samples \(30\.0 ms\).*np\.pad\(audio, \(0, 480 - len\(audio\)\)\)"),
    ("100-samples", "qwen", _ones(100), AudioError, r"has 100 samples \(6\.2 ms", r"Qwen-Audio needs at least 480.*Pad"),
    ("479-samples", "qwen", _ones(479), AudioError, "has 479 samples", "needs at least 480 samples.*Pad it"),
    ("479-samples-8k", "qwen", (_ones(239), 8000), AudioError, "has 478 samples", "needs at least 480 samples"),
    ("short-qwen2", "qwen2", _ones(200), AudioError, "has 200 samples",
     rf"Qwen2-Audio needs at least {QWEN2_MIN_SAMPLES} samples.*np\.pad"),
    ("3-d", "qwen", np.zeros((1, 2, 800), np.float32), AudioError, r"got shape \(1, 2, 800\)",
     r"audio\.squeeze\(\)"),
    ("samples-by-channels", "qwen", np.zeros((16000, 2), np.float32), AudioError, "more channels than samples",
     r"pass audio\.T"),
    ("url-audio", "qwen", "https://example.com/clip.wav", AudioError,
     r"'https://example\.com/clip\.wav' is a URL: the workbench does not fetch", "Download the file first"),
    ("url-whisper", "whisper", "https://example.com/clip.wav", AudioError, "is a URL", "pass its path"),
    ("rate-0", "qwen", (_ones(1600), 0), ValueError, "src_sr=0 is not a sample rate",
     "give a positive whole number of Hz, e.g. 16000"),
    ("rate-fractional", "whisper", (_ones(1600), 16000.5), ValueError, r"src_sr=16000\.5 is not a sample rate",
     "positive whole number of Hz"),
    ("not-an-audio", "qwen", 3.5, TypeError, "audio must be a path.*not float",
     r"an \(array, rate\) pair or an array of 16 kHz samples"),
    ("missing-file", "qwen2", "nowhere.flac", FileNotFoundError, r"'nowhere\.flac' resolves to .*which does not exist",
     "pass audio_dir="),
]


def _audio_of(spec: Any, speech: np.ndarray) -> Any:
    if isinstance(spec, str) and spec in ("x1000", "x10", "nan"):
        audio = speech * {"x1000": 1000, "x10": 10, "nan": 1}[spec]
        if spec == "nan":
            audio = audio.copy()
            audio[7] = np.nan
        return audio
    return spec


PROMPTS = {"whisper": STANDARD_PREFIX, "qwen2": QWEN2_PROMPT}


@pytest.mark.parametrize("family, audio, error, problem, fix", [c[1:] for c in ARRAY_CASES],
                         ids=[c[0] for c in ARRAY_CASES])
def test_bad_audio(models, speech, prompt, family, audio, error, problem, fix):
    model = models[family]
    with pytest.raises(error, match=problem) as raised:
        model.generate(PROMPTS.get(family, prompt), _audio_of(audio, speech), max_new_tokens=1)
    assert raised.match(fix)


def test_url_inside_the_prompt(tiny_qwen):
    with pytest.raises(AudioError, match="is a URL.*Download the file first.*pass its path"):
        tiny_qwen.inputs("<audio>https://example.com/clip.wav</audio><|startoftranscript|>")


def test_peak_between_1_and_2_warns_and_is_used(tiny_qwen, speech, prompt):
    loud = speech / np.abs(speech).max() * 1.5
    with pytest.warns(UserWarning, match=r"peaks at 1\.500, above the \[-1, 1\] full scale.*normalise it"):
        inputs = tiny_qwen.inputs(prompt, loud)
    assert inputs.audios[0].n_samples == len(loud)


# --- bad prompts ----------------------------------------------------------------------------------

PROMPT_CASES = [
    # (id, family, prompt, audio, exception, the problem, the fix)
    ("empty", "qwen", "", None, ValueError, "the prompt is empty", r"give a prompt, e\.g\. wb\.preset\('librispeech'"),
    ("whitespace", "qwen", "  \n", None, ValueError, r"the prompt is empty \(only whitespace\)", "give a prompt"),
    ("empty-whisper", "whisper", "", "speech", ValueError, "the prompt is empty",
     r"give a prompt, e\.g\. '<\|startoftranscript\|><\|en\|><\|transcribe\|><\|notimestamps\|>'"),
    ("empty-qwen2", "qwen2", "", "speech", ValueError, "the prompt is empty",
     r"give a prompt, e\.g\. '<\|audio_bos\|><\|AUDIO\|><\|audio_eos\|>What does the person say\?'"),
    ("inputs-and-audio", "qwen", "inputs", "speech", TypeError, "prompt is already a ModelInputs",
     "do not pass audio"),
    ("not-a-prompt", "qwen", 42, None, TypeError, "prompt must be a str, a TagPrompt or a ModelInputs, not int",
     "a TagPrompt"),
]


@pytest.mark.parametrize("family, text, audio, error, problem, fix", [c[1:] for c in PROMPT_CASES],
                         ids=[c[0] for c in PROMPT_CASES])
def test_bad_prompt(models, speech, prompt, family, text, audio, error, problem, fix):
    model = models[family]
    if text == "inputs":
        text = model.inputs(prompt, speech)
    with pytest.raises(error, match=problem) as raised:
        model.generate(text, speech if audio == "speech" else audio, max_new_tokens=1)
    assert raised.match(fix)


def test_tag_lookalike_warns_with_the_close_tag(tiny_qwen, speech):
    with pytest.warns(UnknownTagWarning, match=r"'<\|transcibe\|>' looks like a tag but is not in the Qwen-Audio "
                                               r"vocabulary.*did you mean '<\|transcribe\|>'\?"):
        tiny_qwen.inputs("<audio>a</audio><|startoftranscript|><|en|><|transcibe|>", speech)


@pytest.mark.parametrize("text, missing", [
    ("<|startoftranscript|>", r"lacks a language tag \(e\.g\. <\|en\|>\) and a task tag"),
    ("<|startoftranscript|><|en|>", r"lacks a task tag \(<\|transcribe\|> or <\|translate\|>\) after"),
    ("<|startoftranscript|><|transcribe|><|notimestamps|>", r"lacks a language tag \(e\.g\. <\|en\|>\) after"),
])
def test_whisper_prefix_without_language_or_task_warns(multilingual_whisper, speech, text, missing):
    with pytest.warns(MissingWhisperTagsWarning, match=missing) as record:
        multilingual_whisper.inputs(text, speech)
    assert "e.g. <|startoftranscript|><|en|><|transcribe|><|notimestamps|>" in str(record[0].message)


def test_whisper_full_prefix_or_english_only_model_does_not_warn(multilingual_whisper, tiny_whisper, speech):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        multilingual_whisper.inputs(STANDARD_PREFIX, speech)
        tiny_whisper.inputs("<|startoftranscript|><|notimestamps|>", speech)   # English-only: no tags needed
    assert multilingual_whisper.multilingual and not tiny_whisper.multilingual


# --- bad capture requests --------------------------------------------------------------------------

CAPTURE_CASES = [
    # (id, options, exception, the problem, the fix)
    ("capture-int", {"capture": 123}, TypeError, r"capture=123: capture takes a name pattern string or a list",
     r"e\.g\. 'llm\.layers\.\*\.attn\.pattern'"),
    ("capture-unknown", {"capture": "llm.layers.*.attention"}, TraceRequestError,
     r"capture 'llm\.layers\.\*\.attention' matches no name this model offers", r"see capture_names\(model\)"),
    ("rows-text-without-output", {"capture": "llm.layers.0.attn.pattern", "rows": "text", "cols": "audio"},
     TraceRequestError, r"selector 'text' picks no position of this prompt \(its positions are audio and tags",
     r"pass generate=N with rows='output'"),
    ("rows-unknown", {"rows": "words"}, TraceRequestError, "position selector 'words' is not one of",
     "or give ints, a slice or a boolean mask"),
]


@pytest.mark.parametrize("options, error, problem, fix", [c[1:] for c in CAPTURE_CASES],
                         ids=[c[0] for c in CAPTURE_CASES])
def test_bad_capture_request(tiny_qwen, prompt, speech, options, error, problem, fix):
    with pytest.raises(error, match=problem) as raised:
        wb.trace(tiny_qwen, prompt, speech, **options)
    assert raised.match(fix)


def test_readme_trace_example_runs(tiny_dir, tiny_clip):
    """The README's trace line, on the tiny fixture loaded as the README loads a checkpoint."""
    qwen = wb.load(tiny_dir / "checkpoint")
    audio = wb.load_audio(tiny_clip)
    trace = wb.trace(qwen, wb.preset("librispeech", lang="en"), audio, generate=8,
                     capture=["llm.layers.*.attn.pattern"], rows="output", cols="audio")
    # rows: the 8 generated tokens; cols: the audio's tokens and its bos / eos positions
    assert trace["llm.layers.0.attn.pattern"].shape == (4, 8, audio_tokens(len(audio)) + 2)
    assert set(trace.positions.iloc[trace.rows]["part"]) == {"output"}


# --- bad model sources and options ----------------------------------------------------------------

BAD_CONFIG = '{"model_type": "qwen", "audio": {"n_mels": 80,}'   # a trailing comma

LOAD_CASES = [
    # (id, call, exception, the problem, the fix); a bad-config-* case's folder holds BAD_CONFIG
    ("bad-config-json", lambda d: wb.load(d), CheckpointError,
     r"config\.json is not valid JSON \(Expecting property name enclosed in double quotes at line 1, column 47\)",
     "fix the file, or restore it from the original checkpoint"),
    ("bad-config-qwen2", lambda d: wb.models.qwen2_audio.load_qwen2_audio(d), CheckpointError,
     r"config\.json is not valid JSON", "restore it from the original checkpoint"),
    ("bad-config-whisper", lambda d: wb.models.whisper.load_whisper(d), CheckpointError,
     r"config\.json is not valid JSON", "restore it"),
    ("qwen-options-to-whisper-name", lambda d: wb.load("whisper-base", audio_on_long="truncate"), TypeError,
     r"'whisper-base' is a Whisper model, which takes dtype, device and attn only, not audio_on_long \(options of "
     r"Qwen-Audio", r"drop it; for long audio, cut it first with wb\.load_audio\(path, on_long='truncate'"),
    ("qwen-options-to-whisper-dir", "whisper-dir", TypeError,
     r"is a Whisper model, which takes dtype, device and attn only, not audio_decoder, chat", "drop them"),
]


@pytest.mark.parametrize("case, call, error, problem, fix", LOAD_CASES, ids=[c[0] for c in LOAD_CASES])
def test_bad_load(tmp_path, case, call, error, problem, fix):
    from tiny_models import write_whisper

    import workbench.models.qwen2_audio  # noqa: F401  (reached as wb.models.… in the cases)
    import workbench.models.whisper  # noqa: F401

    if call == "whisper-dir":
        directory = write_whisper(tmp_path / "whisper")
        call = lambda d: wb.load(directory, audio_decoder="ffmpeg", chat=True)  # noqa: E731
    if case.startswith("bad-config"):
        (tmp_path / "config.json").write_text(BAD_CONFIG)
    before = _digest(tmp_path)
    with pytest.raises(error, match=problem) as raised:
        call(tmp_path)
    assert raised.match(fix)
    assert _digest(tmp_path) == before


# --- long audio and long prompts ---------------------------------------------------------------------

def test_long_audio_on_the_model_names_the_model_setting(tiny_qwen, prompt):
    long = np.zeros(45 * 16000, np.float32)
    with pytest.raises(LongAudioError, match=r"45\.00 s long, longer than the model's 30 s window") as raised:
        tiny_qwen.generate(prompt, long, max_new_tokens=1)
    message = str(raised.value)
    assert "wb.load(..., audio_on_long='truncate')" in message and "with_options(audio_on_long='truncate')" in message
    assert "Pass on_long=" not in message   # generate takes no on_long
    with pytest.warns(UserWarning, match="keeping the first 30 s"):
        kept = tiny_qwen.with_options(audio_on_long="truncate").inputs(prompt, long)
    assert kept.audios[0].n_samples == 480_000


def test_long_audio_on_whisper_names_load_audio(tiny_whisper):
    with pytest.raises(LongAudioError, match=r"45\.00 s long.*Cut it first: wb\.load_audio\(path, "
                                             r"on_long='truncate'\).*pass the array"):
        tiny_whisper.inputs(STANDARD_PREFIX, np.zeros(45 * 16000, np.float32))


def test_long_audio_in_load_audio_keeps_its_own_advice():
    with pytest.raises(LongAudioError, match=r"45\.00 s long.*Pass on_long='truncate'.*on_long='chunk'"):
        load_audio((np.zeros(45 * 8000, np.float32), 8000))


@pytest.mark.parametrize("flags, reason", [
    ({"use_dynamic_ntk": True, "use_logn_attn": True},
     r"beyond seq_length 2048 the official model applies dynamic-NTK rotary scaling and logn attention scaling "
     r"\(config\.json: use_dynamic_ntk=true, use_logn_attn=true\)"),
    ({"use_dynamic_ntk": False, "use_logn_attn": True},
     r"beyond seq_length 2048 the official model applies logn attention scaling \(config\.json: "
     r"use_logn_attn=true\), which this implementation does not"),
    ({"use_dynamic_ntk": False, "use_logn_attn": False},
     r"this checkpoint's config\.json sets max_position_embeddings 2048 \(with use_dynamic_ntk and use_logn_attn "
     r"off\), the longest sequence it is built for"),
])
def test_context_too_long_states_the_configs_reason(tiny_qwen, flags, reason):
    official = {**tiny_qwen.config.official, **flags, "max_position_embeddings": 2048}
    config = dataclasses.replace(tiny_qwen.config, official=official, max_positions=2048)
    model = QwenAudio(tiny_qwen.network, tiny_qwen.tokenizer, config)
    with pytest.raises(ContextTooLongError, match=r"needs 2049 positions, more than 2048: " + reason) as raised:
        model.forward(ModelInputs(text="", input_ids=torch.full((1, 2049), 9707)))
    assert raised.match("shorten the prompt")
    if not any(flags.values()):
        assert "NTK" not in str(raised.value)


# --- what the fixes added ---------------------------------------------------------------------------

def _at_8k(speech: np.ndarray) -> np.ndarray:
    return load_audio((speech, 16000), sr=8000)


@pytest.mark.parametrize("family", ["qwen", "whisper", "qwen2"])
def test_array_with_its_rate_is_one_audio_resampled(models, speech, prompt, family):
    model, text = models[family], PROMPTS.get(family, prompt)
    x8k = _at_8k(speech)
    resampled = load_audio((x8k, 8000))
    pair = model.forward(text, (x8k, 8000))
    torch.testing.assert_close(pair.logits, model.forward(text, resampled).logits, rtol=0, atol=0)
    assert model.inputs(text, (x8k, 8000)).audios[0].n_samples == len(resampled) == len(speech)
    as_tensor = model.inputs(text, (torch.from_numpy(x8k), 8000))
    torch.testing.assert_close(as_tensor.audios[0].mel, model.inputs(text, resampled).audios[0].mel)


def test_rate_pairs_through_generate_trace_and_batches(tiny_qwen, speech, prompt):
    x8k = _at_8k(speech)
    resampled = load_audio((x8k, 8000))
    alone = tiny_qwen.generate(prompt, (x8k, 8000), max_new_tokens=3)
    assert alone.ids == tiny_qwen.generate(prompt, resampled, max_new_tokens=3).ids
    batch = tiny_qwen.generate_batch([(prompt, (x8k, 8000)), (prompt, speech)], max_new_tokens=3)
    assert batch[0].ids == alone.ids
    traced = wb.trace(tiny_qwen, prompt, (x8k, 8000), capture="llm.layers.0.attn.pattern", rows="last")
    assert traced.inputs.audios[0].n_samples == len(resampled)
    two = tiny_qwen.inputs("<audio>a</audio><audio>b</audio>", [(x8k, 8000), (speech, 16000)])
    assert [a.n_samples for a in two.audios] == [len(resampled), len(speech)]


def test_on_truncated_warn_uses_what_is_there(tmp_path, shared_audio, tiny_qwen, prompt):
    path = truncated_wav(tmp_path, shared_audio)
    for decoder in ("auto", "ffmpeg"):
        with pytest.warns(UserWarning, match=r"10\.47 s are missing; using the 0\.53 s that are there"):
            audio = load_audio(path, decoder=decoder, on_truncated="warn")
        assert abs(len(audio) - round(23_414 * 16000 / 44100)) <= 1
    lenient = tiny_qwen.with_options(audio_on_truncated="warn")
    with pytest.warns(UserWarning, match="truncated.*using the 0.53 s"):
        inputs = lenient.inputs(prompt, path)
    with pytest.warns(UserWarning, match="truncated"):
        assert inputs.audios[0].n_samples == len(load_audio(path, on_truncated="warn"))
    with pytest.raises(ValueError, match=r"audio_on_truncated='ignore': choose one of \('error', 'warn'\)"):
        tiny_qwen.with_options(audio_on_truncated="ignore")


def test_complete_files_are_neither_truncated_nor_too_loud(tmp_path, shared_audio):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for decoder in ("auto", "ffmpeg"):
            assert len(load_audio(_wav_of(shared_audio / "jfk.flac", tmp_path), decoder=decoder)) == 176_000
            assert len(load_audio(shared_audio / "jfk.flac", decoder=decoder)) == 176_000
        load_audio(shared_audio / "glass-breaking-151256.mp3")   # peaks at 1.025 decoded: codecs overshoot
    assert (MIN_SAMPLES, QWEN2_MIN_SAMPLES) == (480, 321)   # 3 mel frames; Qwen2-Audio rounds frames up


def test_shortest_clips_run(tiny_qwen, tiny_qwen2, prompt):
    assert tiny_qwen.forward(prompt, _ones(MIN_SAMPLES)).logits.shape[1] == tiny_qwen.inputs(prompt, _ones(480)).length
    inputs = tiny_qwen2.inputs(QWEN2_PROMPT, _ones(QWEN2_MIN_SAMPLES))
    assert inputs.audios[0].n_positions == 3   # bos, one audio token, eos
    tiny_qwen2.forward(inputs)

