"""Synthesise the demo clips shipped in `workbench/assets/demo/`, with their `labels.jsonl`.

    python scripts/make_demo_clips.py

Speech comes from espeak-ng with a fixed voice, speed and pitch, so a rerun on the same espeak-ng
version gives the same samples; another espeak-ng version may pronounce differently, which is why
the committed clips are the truth and this script only regenerates them (it records the espeak-ng
version in the labels). The tone sequence is plain numpy and is the same everywhere.

Every clip is 16 kHz mono FLAC (16-bit), a few seconds long, peak-normalised to the same level.
"""
from __future__ import annotations

import json
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile
import soxr

REPO = Path(__file__).resolve().parents[1]
OUT_DIR = REPO / "workbench" / "assets" / "demo"
SAMPLE_RATE = 16000
PEAK = 0.7              # every clip is scaled to this peak, so they play at a similar level
ESPEAK = "espeak-ng"


@dataclass(frozen=True)
class Speech:
    name: str
    language: str        # the Qwen-Audio language tag (en, de, fr, es, zh)
    voice: str           # espeak-ng voice
    text: str            # the transcript, as a label
    spoken: str          # what espeak-ng reads (pinyin with tone digits for Mandarin)
    speed: int = 150     # words per minute (-s)
    pitch: int = 50      # 0..99 (-p)


SPEECH = (
    Speech("speech_en", "en", "en", "The quick brown fox jumps over the lazy dog.",
           "The quick brown fox jumps over the lazy dog."),
    Speech("speech_de", "de", "de", "Heute scheint die Sonne über dem ganzen Land.",
           "Heute scheint die Sonne über dem ganzen Land."),
    Speech("speech_fr", "fr", "fr", "Le petit chat dort tranquillement sur le canapé.",
           "Le petit chat dort tranquillement sur le canapé."),
    Speech("speech_es", "es", "es", "Mañana vamos a la playa con mis amigos.",
           "Mañana vamos a la playa con mis amigos."),
    # Plain `cmn` reads tone digits as English numbers; the pinyin voice reads them as tones.
    Speech("speech_zh", "zh", "cmn-latn-pinyin", "今天天气很好。",
           "jin1 tian1 tian1 qi4 hen3 hao3."),
)


@dataclass(frozen=True)
class Note:
    midi: int
    onset_s: float
    duration_s: float

    @property
    def name(self) -> str:
        return ["C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B"][self.midi % 12] + str(
            self.midi // 12 - 1
        )

    @property
    def frequency(self) -> float:
        return 440.0 * 2.0 ** ((self.midi - 69) / 12)


# C major, C4..C5, one note every 0.4 s from 0.2 s: onsets fall on whole samples and 10 ms mel frames.
SCALE = tuple(Note(midi, round(0.2 + 0.4 * i, 3), 0.35) for i, midi in enumerate((60, 62, 64, 65, 67, 69, 71, 72)))
SCALE_TAIL_S = 0.2
HARMONICS = 4


def espeak_version() -> str:
    out = subprocess.run([ESPEAK, "--version"], capture_output=True, text=True, check=True).stdout
    return out.split("speech:")[1].split()[0]   # "eSpeak NG text-to-speech: 1.51  Data at: ..."


def synthesize_speech(spec: Speech) -> np.ndarray:
    # -w to a file: with --stdout espeak-ng writes a streaming WAV header that claims 2 GB of data.
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "speech.wav"
        subprocess.run(
            [ESPEAK, "-v", spec.voice, "-s", str(spec.speed), "-p", str(spec.pitch), "-a", "100",
             "-w", str(wav), spec.spoken],
            check=True, capture_output=True,
        )
        audio, sr = soundfile.read(wav, dtype="float64")
    return soxr.resample(audio, sr, SAMPLE_RATE, quality="VHQ")


def synthesize_notes(notes: tuple[Note, ...], tail_s: float) -> np.ndarray:
    end_s = max(n.onset_s + n.duration_s for n in notes) + tail_s
    audio = np.zeros(round(end_s * SAMPLE_RATE))
    for note in notes:
        n = round(note.duration_s * SAMPLE_RATE)
        t = np.arange(n) / SAMPLE_RATE
        tone = sum(np.sin(2 * np.pi * h * note.frequency * t) / h for h in range(1, HARMONICS + 1))
        # 10 ms attack, exponential decay, 20 ms release to exactly zero: no clicks at the edges.
        envelope = np.minimum(t / 0.010, 1.0) * np.exp(-3.0 * t)
        envelope *= np.clip((note.duration_s - t) / 0.020, 0.0, 1.0)
        start = round(note.onset_s * SAMPLE_RATE)
        audio[start:start + n] += tone * envelope
    return audio


def write_clip(name: str, audio: np.ndarray, kind: str, language: str | None, text: str) -> dict:
    audio = audio * (PEAK / np.abs(audio).max())
    path = OUT_DIR / f"{name}.flac"
    soundfile.write(path, audio, SAMPLE_RATE, format="FLAC", subtype="PCM_16")
    return {"file": path.name, "kind": kind, "language": language, "text": text,
            "sample_rate": SAMPLE_RATE, "n_samples": len(audio),
            "duration_s": round(len(audio) / SAMPLE_RATE, 4)}


def main() -> None:
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    version = espeak_version()
    labels = []
    for spec in SPEECH:
        row = write_clip(spec.name, synthesize_speech(spec), "speech", spec.language, spec.text)
        row["synth"] = {"engine": "espeak-ng", "version": version, "voice": spec.voice,
                        "speed_wpm": spec.speed, "pitch": spec.pitch, "input": spec.spoken}
        labels.append(row)
    row = write_clip("tones_c_major", synthesize_notes(SCALE, SCALE_TAIL_S), "music", None,
                     "C major scale C4-C5, eight harmonic tones")
    row["notes"] = [{"midi": n.midi, "name": n.name, "onset_s": n.onset_s, "duration_s": n.duration_s}
                    for n in SCALE]
    row["synth"] = {"engine": "numpy", "harmonics": HARMONICS}
    labels.append(row)

    lines = [json.dumps(row, ensure_ascii=False) for row in labels]
    (OUT_DIR / "labels.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    for row in labels:
        size_kb = (OUT_DIR / row["file"]).stat().st_size / 1024
        print(f"{row['file']:22s} {row['duration_s']:5.2f} s {size_kb:6.1f} KB  {row['text']}")


if __name__ == "__main__":
    main()
