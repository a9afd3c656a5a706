"""Real human speech for the v2 gate "WER on real speech": recordings that install with Debian
packages (or sit in ../shared), never used in training. Sources and licences: REAL_SPEECH.md.

    from real_speech import real_speech_clips
    for clip in real_speech_clips():      # only the sources installed here
        clip.audio, clip.transcript, clip.speaker

Transcripts are lowercase words without punctuation (the `<|wo_itn|>` reference), numbers in words.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from workbench.audio import load_audio

POCKETSPHINX = Path("/usr/share/pocketsphinx/test/data")  # Debian pocketsphinx-testdata
ALSA = Path("/usr/share/sounds/alsa")  # Debian alsa-utils
SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "audio"


@dataclass(frozen=True)
class RealClip:
    id: str
    path: Path
    transcript: str
    speaker: str
    source: str  # a key of SOURCES
    raw: bool = False  # headerless 16 kHz 16-bit little-endian mono

    @property
    def audio(self) -> np.ndarray:
        if self.raw:
            return (np.fromfile(self.path, dtype="<i2").astype(np.float32) / 32768).copy()
        return load_audio(self.path)

    @property
    def words(self) -> int:
        return len(self.transcript.split())


# source → (what, package, licence); the table of REAL_SPEECH.md
SOURCES = {
    "librivox": ("LibriVox reading of Austen's Sense and Sensibility, ch. 1 (5 utterances)",
                 "Debian pocketsphinx-testdata", "recording public domain (LibriVox); package BSD-2-Clause"),
    "cards": ("CMU Sphinx test utterances, playing cards (5 utterances)",
              "Debian pocketsphinx-testdata", "BSD-2-Clause (Carnegie Mellon University)"),
    "goforward": ("CMU Sphinx test utterance \"go forward ten meters\"", "Debian pocketsphinx-testdata",
                  "BSD-2-Clause (Carnegie Mellon University)"),
    "alsa": ("ALSA speaker-test channel names (8 clips)", "Debian alsa-utils", "GPL-2"),
    "librispeech": ("LibriSpeech dev-clean 1272-128104-0000", "../shared/audio (not in the repo)", "CC BY 4.0"),
    "jfk": ("J. F. Kennedy, inaugural address 1961 (excerpt)", "../shared/audio (not in the repo)",
            "public domain (U.S. government work)"),
}


def _normalise(text: str) -> str:
    text = text.lower()
    return " ".join(re.sub(r"[^a-z' ]+", " ", text).split())


def _pocketsphinx() -> list[RealClip]:
    clips = []
    for folder, source, speaker in (("librivox", "librivox", "librivox-reader"), ("cards", "cards", "cmu-cards")):
        listing = POCKETSPHINX / folder / ("transcription" if folder == "librivox" else "cards.transcription")
        if not listing.is_file():
            continue
        for line in listing.read_text().splitlines():
            match = re.match(r"\s*<s>(.*)</s>\s*\((\S+)\)", line)
            if match:
                name = match.group(2)
                clips.append(RealClip(f"{source}-{name}", POCKETSPHINX / folder / f"{name}.wav",
                                      _normalise(match.group(1)), speaker, source))
    if (POCKETSPHINX / "goforward.raw").is_file():
        clips.append(RealClip("goforward", POCKETSPHINX / "goforward.raw", "go forward ten meters",
                              "cmu-goforward", "goforward", raw=True))
    return clips


def _alsa() -> list[RealClip]:
    return [RealClip(f"alsa-{p.stem}", p, p.stem.replace("_", " ").lower(), "alsa-voice", "alsa")
            for p in sorted(ALSA.glob("*_*.wav"))] if ALSA.is_dir() else []


def _shared(folder: Path = SHARED) -> list[RealClip]:
    labels = folder / "labels.jsonl"
    if not labels.is_file():
        return []
    clips = []
    for row in map(json.loads, labels.read_text().splitlines()):
        if row["file"] == "1272-128104-0000.flac":
            clips.append(RealClip("librispeech-1272-128104-0000", folder / row["file"], _normalise(row["transcript"]),
                                  "librispeech-1272", "librispeech"))
        elif row["file"] == "jfk.flac":
            clips.append(RealClip("jfk", folder / row["file"], _normalise(row["transcript"]), "jfk", "jfk"))
    return clips


def real_speech_clips(sources: tuple[str, ...] = tuple(SOURCES)) -> list[RealClip]:
    """Every installed clip of `sources`, in a fixed order."""
    clips = _pocketsphinx() + _alsa() + _shared()
    return [c for c in clips if c.source in sources and c.path.is_file()]


def summary(clips: list[RealClip]) -> dict:
    return {"clips": len(clips), "words": sum(c.words for c in clips), "speakers": len({c.speaker for c in clips}),
            "by_source": {s: sum(c.words for c in clips if c.source == s) for s in dict.fromkeys(c.source for c in clips)}}


if __name__ == "__main__":
    found = real_speech_clips()
    print(json.dumps(summary(found), indent=1))
    for clip in found:
        print(f"{clip.id:48s} {clip.speaker:18s} {clip.transcript}")
