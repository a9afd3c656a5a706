"""Speech from espeak-ng: whole sentences, word-by-word speech with exact word times, emotion proxies.

espeak-ng writes 22,050 Hz 16-bit WAV to stdout; it is resampled to 16 kHz with soxr. Output is
deterministic for a given text and voice, so a corpus is reproducible from its seed.
"""
from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from xml.sax.saxutils import escape

import numpy as np
import soxr

from workbench.errors import MissingToolError

SAMPLE_RATE = 16_000
ESPEAK_RATE = 22_050
TIME_STEP = 0.01  # the resolution of Qwen-Audio's time tags <|0.00|> … <|30.00|>
_STEP_SAMPLES = round(TIME_STEP * SAMPLE_RATE)  # 160

# espeak-ng voice per grammar language; Mandarin must be the pinyin voice (see grammar.py).
ESPEAK_VOICES = {"en": "en-us", "de": "de", "fr": "fr", "es": "es", "zh": "cmn-latn-pinyin"}
# Voice variants (espeak-ng-data/voices/!v) that change timbre and base pitch: the "speakers".
VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5")


@dataclass(frozen=True)
class Voice:
    language: str  # a key of ESPEAK_VOICES
    variant: str = "m3"
    speed: int = 160  # words per minute (espeak-ng -s)
    pitch: int = 50  # 0–99 (espeak-ng -p)

    def espeak_name(self) -> str:
        if self.language not in ESPEAK_VOICES:
            raise ValueError(f"no espeak-ng voice for language {self.language!r}; "
                             f"use one of {', '.join(ESPEAK_VOICES)}")
        return f"{ESPEAK_VOICES[self.language]}+{self.variant}"


def random_voice(rng: np.random.Generator, language: str) -> Voice:
    """A random speaker, speed and pitch: the robustness variation of every speech item."""
    return Voice(language, VARIANTS[rng.integers(len(VARIANTS))], int(rng.integers(135, 196)),
                 int(rng.integers(30, 71)))


def _espeak() -> str:
    path = shutil.which("espeak-ng")
    if path is None:
        raise MissingToolError("espeak-ng is not installed; the synthetic corpus needs it for speech: "
                               "apt-get install espeak-ng")
    return path


def synthesize(text: str, voice: Voice, ssml: bool = False) -> np.ndarray:
    """`text` spoken by `voice`, float32 at 16 kHz, with espeak-ng's own leading/trailing pauses.
    With ssml=True, `text` is SSML (e.g. `<break time="400ms"/>` between words)."""
    if not text.strip():
        raise ValueError("synthesize() got empty text; pass at least one word")
    command = [_espeak(), "--stdout", "-z", *(["-m"] if ssml else []), "-v", voice.espeak_name(),
               "-s", str(voice.speed), "-p", str(voice.pitch), "--", text]
    result = subprocess.run(command, capture_output=True, check=False)
    if result.returncode != 0 or result.stdout[:4] != b"RIFF":
        raise RuntimeError(f"espeak-ng failed on {text!r} with voice {voice.espeak_name()}: "
                           f"{result.stderr.decode(errors='replace').strip()}")
    wav = result.stdout
    rate = int.from_bytes(wav[24:28], "little")
    if rate != ESPEAK_RATE:
        raise RuntimeError(f"espeak-ng wrote {rate} Hz audio, expected {ESPEAK_RATE} Hz")
    # The streamed header carries placeholder sizes, so the samples are simply everything after it.
    samples = np.frombuffer(wav[44:44 + (len(wav) - 44) // 2 * 2], dtype="<i2").astype(np.float32) / 32768
    return soxr.resample(samples, ESPEAK_RATE, SAMPLE_RATE).astype(np.float32)


def trim(audio: np.ndarray, top_db: float = 40.0, frame: int = 64) -> np.ndarray:
    """The audio without leading and trailing frames quieter than peak − top_db (4 ms frames).

    Written out rather than librosa.effects.trim, whose first call compiles for ~20 s in every
    worker process."""
    n = len(audio) // frame
    if n == 0:
        return audio
    rms = np.sqrt(np.mean(audio[:n * frame].reshape(n, frame).astype(np.float64) ** 2, axis=1))
    loud = np.flatnonzero(rms > rms.max() * 10 ** (-top_db / 20))
    return audio[loud[0] * frame:(loud[-1] + 1) * frame] if rms.max() > 0 else audio[:0]


def to_peak(audio: np.ndarray, peak: float) -> np.ndarray:
    """Scale so that the largest magnitude is `peak` (silence stays silence)."""
    largest = float(np.max(np.abs(audio))) if audio.size else 0.0
    return (audio * (peak / largest)).astype(np.float32) if largest > 0 else audio.astype(np.float32)


def silence(seconds: float) -> np.ndarray:
    return np.zeros(round(seconds * SAMPLE_RATE), dtype=np.float32)


# ---------------------------------------------------------------------------------------------
# Word-by-word speech: every boundary lies on the 10 ms grid of the time tags, so times are exact.
@dataclass(frozen=True)
class TimedWord:
    word: str
    start: float  # seconds, a multiple of 0.01
    end: float


@dataclass(frozen=True)
class TimedSpeech:
    audio: np.ndarray
    words: tuple[TimedWord, ...]

    @property
    def duration(self) -> float:
        return len(self.audio) / SAMPLE_RATE


def _grid(samples: int) -> int:
    """Round a sample count up to whole 10 ms steps."""
    return -(-samples // _STEP_SAMPLES) * _STEP_SAMPLES


_BREAK_MS = 400  # pause espeak-ng puts between words when they are spoken in one call
_MIN_BREAK_FRAMES = 25  # silences of ≥ 250 ms are breaks; no single word has a pause that long


def _spoken_words(texts: list[str], voice: Voice) -> list[np.ndarray]:
    """Each text spoken on its own and trimmed. One espeak-ng call with SSML breaks between the
    words, cut at the breaks (7× faster than a call a word); a call a word if the cut is unclear."""
    joined = f'<break time="{_BREAK_MS}ms"/>'.join(escape(t) for t in texts)
    audio = synthesize(f"<speak>{joined}</speak>", voice, ssml=True)
    n = len(audio) // _STEP_SAMPLES
    rms = np.sqrt(np.mean(audio[:n * _STEP_SAMPLES].reshape(n, _STEP_SAMPLES).astype(np.float64) ** 2, axis=1))
    silent = np.concatenate([[False], rms < rms.max() * 0.01, [False]])
    edges = np.flatnonzero(np.diff(silent.astype(np.int8)))
    runs = [(a, b) for a, b in zip(edges[::2], edges[1::2]) if b - a >= _MIN_BREAK_FRAMES and a > 0 and b < n]
    if len(runs) == len(texts) - 1:
        cuts = [0, *(((a + b) // 2) * _STEP_SAMPLES for a, b in runs), len(audio)]
        pieces = [trim(audio[start:end]) for start, end in zip(cuts, cuts[1:])]
        if all(len(p) for p in pieces):
            return pieces
    return [trim(synthesize(t, voice)) for t in texts]


def speak_words(words: list[tuple[str, str, bool]], voice: Voice, rng: np.random.Generator) -> TimedSpeech:
    """Speak each (word, espeak text, begins a word) on its own, trim it, and join them.

    Each unit's segment is its trimmed speech padded with zeros up to the next 10 ms boundary, so
    its start and end are exact time-tag values. Leading and trailing silences (0.10–0.40 s) and
    the gaps before units that begin a word (none half of the time, else 0.05–0.20 s) are whole
    10 ms steps too; units inside a word (Mandarin characters) follow without a gap."""
    if not words:
        raise ValueError("speak_words() got no words; pass at least one (word, text, begins) triple")
    pieces = [silence(rng.integers(10, 41) * TIME_STEP)]
    timed = []
    position = len(pieces[0])
    for i, ((word, _, begins), spoken) in enumerate(zip(words, _spoken_words([w[1] for w in words], voice))):
        if i and begins:
            gap = silence(rng.integers(5, 21) * TIME_STEP if rng.random() < 0.5 else 0.0)
            pieces.append(gap)
            position += len(gap)
        segment = np.zeros(_grid(len(spoken)), dtype=np.float32)
        segment[:len(spoken)] = spoken
        pieces.append(segment)
        timed.append(TimedWord(word, round(position / SAMPLE_RATE, 2), round((position + len(segment)) / SAMPLE_RATE, 2)))
        position += len(segment)
    pieces.append(silence(rng.integers(10, 31) * TIME_STEP))
    return TimedSpeech(np.concatenate(pieces), tuple(timed))


# ---------------------------------------------------------------------------------------------
# Emotion proxies: MELD labels acted out by prosody alone. These are *proxies*, not emotions:
# joy = high pitch + fast, sadness = low pitch + slow + quiet, anger = fast + loud.
@dataclass(frozen=True)
class Prosody:
    pitch: tuple[int, int]  # espeak-ng -p range
    speed: tuple[int, int]  # words per minute
    peak: tuple[float, float]  # output peak level


EMOTIONS: dict[str, Prosody] = {
    "neutral": Prosody((40, 56), (150, 172), (0.30, 0.50)),
    "joy": Prosody((78, 99), (195, 230), (0.30, 0.50)),
    "sadness": Prosody((0, 18), (105, 125), (0.05, 0.12)),
    "anger": Prosody((40, 60), (200, 235), (0.80, 0.98)),
}


def speak_with_emotion(text: str, emotion: str, rng: np.random.Generator, language: str = "en") -> np.ndarray:
    """`text` spoken with the prosody proxy of `emotion` (a key of EMOTIONS) by a random speaker."""
    if emotion not in EMOTIONS:
        raise ValueError(f"emotion {emotion!r} has no prosody proxy; use one of {', '.join(EMOTIONS)}")
    style = EMOTIONS[emotion]
    voice = Voice(language, VARIANTS[rng.integers(len(VARIANTS))], int(rng.integers(*style.speed)),
                  int(rng.integers(*style.pitch)))
    return to_peak(synthesize(text, voice), float(rng.uniform(*style.peak)))
