"""The shipped demo clips: present, decodable, labelled truthfully, found as package resources."""
from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from importlib.resources import files
from pathlib import Path

import numpy as np
import pytest
import soundfile

from workbench.audio import SAMPLE_RATE, load_audio
from workbench.demo import DemoClip, demo_clip, demo_clips, demo_dir, demo_path
from workbench.errors import UnknownDemoClipError
from workbench.tags import LANGUAGES

REPO = Path(__file__).resolve().parents[1]
LABELS = [json.loads(line) for line in (demo_dir() / "labels.jsonl").read_text(encoding="utf-8").splitlines()]


def test_clips_come_from_the_package_resources():
    assert demo_dir() == Path(str(files("workbench"))) / "assets" / "demo"
    assert [c.name for c in demo_clips()] == [Path(row["file"]).stem for row in LABELS]
    assert all(isinstance(c, DemoClip) and c.path.parent == demo_dir() for c in demo_clips())


def test_one_sentence_per_language_and_a_scale():
    speech = [c for c in demo_clips() if c.kind == "speech"]
    assert sorted(c.language for c in speech) == ["de", "en", "es", "fr", "zh"]
    assert {c.language for c in speech} <= set(LANGUAGES)   # languages the model has tags for
    assert all(c.text for c in speech)
    [music] = [c for c in demo_clips() if c.kind == "music"]
    assert music.language is None and len(music.extra["notes"]) == 8


@pytest.mark.parametrize("row", LABELS, ids=lambda row: row["file"])
def test_clip_file_matches_its_label(row):
    path = demo_dir() / row["file"]
    info = soundfile.info(path)
    assert (info.format, info.subtype, info.samplerate, info.channels) == ("FLAC", "PCM_16", 16000, 1)
    assert row["sample_rate"] == SAMPLE_RATE and info.frames == row["n_samples"]
    assert row["duration_s"] == pytest.approx(row["n_samples"] / SAMPLE_RATE, abs=1e-4)
    assert 2.0 <= row["duration_s"] <= 4.0
    assert path.stat().st_size < 200_000
    audio = load_audio(path)
    assert audio.dtype == np.float32 and audio.shape == (row["n_samples"],)
    assert np.abs(audio).max() == pytest.approx(0.7, abs=1e-3)   # the script's peak level


def test_tone_labels_give_the_pitch_and_timing_heard():
    scale = demo_clip("tones_c_major")
    audio = load_audio(scale.path)
    for note in scale.extra["notes"]:
        start = round(note["onset_s"] * SAMPLE_RATE)
        window = audio[start:start + round(note["duration_s"] * SAMPLE_RATE)]
        spectrum = np.abs(np.fft.rfft(window * np.hanning(len(window)), n=1 << 16))
        peak_hz = np.argmax(spectrum) * SAMPLE_RATE / (1 << 16)
        expected_hz = 440.0 * 2 ** ((note["midi"] - 69) / 12)
        assert abs(12 * np.log2(peak_hz / expected_hz)) < 0.1, note   # within a tenth of a semitone
        before = audio[max(0, start - 800):start]     # 50 ms before the onset: the previous note's gap
        assert np.abs(before).max() < 1e-3 and np.abs(window).max() > 0.1


def test_speech_clips_are_not_silent():
    for clip in demo_clips():
        audio = load_audio(clip.path)
        frames = audio[: len(audio) // 160 * 160].reshape(-1, 160)
        loud = np.sqrt((frames ** 2).mean(axis=1)) > 0.01
        assert loud.mean() > 0.5, clip.name   # sound in most 10 ms frames


def test_lookup_by_name():
    clip = demo_clip("speech_zh")
    assert clip.language == "zh" and clip.text == "今天天气很好。"
    assert clip.extra["synth"]["voice"] == "cmn-latn-pinyin"
    assert demo_path("speech_en") == demo_clip("speech_en").path
    assert len({clip, demo_clip("speech_zh")}) == 1          # hashable (extra is left out of the hash)


def test_unknown_name_lists_the_clips():
    with pytest.raises(UnknownDemoClipError) as caught:
        demo_clip("speech_xx")
    message = str(caught.value)
    assert "'speech_xx'" in message and all(c.name in message for c in demo_clips())
    assert isinstance(caught.value, KeyError) and isinstance(caught.value, ValueError)
    with pytest.raises(UnknownDemoClipError, match="no demo clip 'nope'"):
        demo_path("nope")


def test_clips_list_is_a_copy():
    clips = demo_clips()
    clips.clear()
    assert len(demo_clips()) == len(LABELS)


def _espeak_version() -> str | None:
    if shutil.which("espeak-ng") is None:
        return None
    out = subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True).stdout
    return out.split("speech:")[1].split()[0]


def test_script_regenerates_the_committed_clips(tmp_path, monkeypatch):
    """Rerunning the script gives the committed samples and labels (with the same espeak-ng)."""
    recorded = {row["synth"]["version"] for row in LABELS if row["synth"]["engine"] == "espeak-ng"}
    if _espeak_version() not in recorded:
        pytest.skip(f"espeak-ng {_espeak_version()} is not the version the clips were made with ({recorded})")
    spec = importlib.util.spec_from_file_location("make_demo_clips", REPO / "scripts" / "make_demo_clips.py")
    script = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "make_demo_clips", script)   # dataclasses look their module up
    spec.loader.exec_module(script)
    monkeypatch.setattr(script, "OUT_DIR", tmp_path)
    script.main()
    assert (tmp_path / "labels.jsonl").read_text(encoding="utf-8") == (demo_dir() / "labels.jsonl").read_text(
        encoding="utf-8")
    for row in LABELS:
        fresh, _ = soundfile.read(tmp_path / row["file"], dtype="int16")
        committed, _ = soundfile.read(demo_dir() / row["file"], dtype="int16")
        np.testing.assert_array_equal(fresh, committed, err_msg=row["file"])
