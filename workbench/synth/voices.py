"""TTS engines and voices for the v2 corpus, with the voices held out for test.

Engines (Debian packages; none is a Python dependency):
- `espeak-ng` (package espeak-ng): formant synthesis, every corpus language; voice variants
  (`+m1` … `+f5`) and accents (en-us, en-gb, en-gb-scotland, en-029, en-gb-x-rp) stand for speakers.
  No word times for a whole sentence: SRWT with espeak-ng keeps v1's word-by-word synthesis
  (`speech.speak_words`).
- `flite` (package flite): CMU diphone (kal, kal16) and clustergen (awb, rms, slt) voices. Its command
  line prints phone end times but not which word they belong to, so no word times.
- `festival` (packages festival, festvox-kallpc16k, festvox-kdlpc16k, festvox-us-slt-hts): diphone voices
  kal and ked and the HTS voice of speaker slt. Gives word start/end times (`word_times`), from the
  first and last segment of each word's syllables.
mbrola voices are not in Debian main, so there are none.

Held out (`split`): test speech comes from the flite engine's awb and rms (an engine and two speakers
never heard in training), festival's ked (a speaker never heard), and two espeak-ng variants per
language (f3, m6; `TEST_VARIANTS`, which make_corpus_v2 also keeps out of the v1 tasks). Validation
uses flite's kal16 and slt: a held-out engine whose speakers (kal, slt) training hears through festival.

Variation: a speed factor (0.85–1.2) and a pitch shift (−3…+3 semitones) per item. espeak-ng applies both
natively (words per minute, `-p`); flite and festival's diphone voices stretch durations natively and
shift pitch with sox `pitch` (duration unchanged); the HTS voice ignores festival's Duration_Stretch,
so its speed uses sox `tempo` and its word times are scaled by the same factor.
"""
from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from .speech import SAMPLE_RATE, VARIANTS, MissingToolError, TimedWord, trim

ENGINES = ("espeak-ng", "flite", "festival")
TEST_VARIANTS = ("f3", "m6")
TRAIN_VARIANTS = tuple(v for v in VARIANTS if v not in TEST_VARIANTS)
_ESPEAK_LANGUAGE = {"en": "en-us", "de": "de", "fr": "fr", "es": "es", "zh": "cmn-latn-pinyin"}
_ENGINE_PACKAGES = {"espeak-ng": "espeak-ng", "flite": "flite",
                    "festival": "festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts"}


@dataclass(frozen=True)
class EngineVoice:
    engine: str  # one of ENGINES
    name: str  # espeak-ng voice+variant, flite -voice name, festival voice (without "voice_")
    language: str
    split: str  # "train", "validation" or "test": which split's speech it speaks
    speaker: str  # the recorded or modelled speaker; voices of one speaker in two engines share it

    @property
    def id(self) -> str:
        return f"{self.engine}:{self.name}"

    @property
    def word_times(self) -> bool:
        return self.engine == "festival"


def _registry() -> tuple[EngineVoice, ...]:
    voices = []
    accents = (("en-us", TRAIN_VARIANTS[:8]), ("en-gb", ("m3", "f5")), ("en-gb-scotland", ("m1",)),
               ("en-029", ("f2",)))
    for accent, variants in accents:
        voices += [EngineVoice("espeak-ng", f"{accent}+{v}", "en", "train", f"espeak-{accent}-{v}") for v in variants]
    voices += [EngineVoice("espeak-ng", f"en-gb-x-rp+{v}", "en", "test", f"espeak-en-gb-x-rp-{v}") for v in TEST_VARIANTS]
    voices += [EngineVoice("espeak-ng", f"en-us+{v}", "en", "test", f"espeak-en-us-{v}") for v in TEST_VARIANTS]
    voices += [EngineVoice("festival", "kal_diphone", "en", "train", "kal"),
               EngineVoice("festival", "cmu_us_slt_arctic_hts", "en", "train", "slt"),
               EngineVoice("festival", "ked_diphone", "en", "test", "ked"),
               EngineVoice("flite", "awb", "en", "test", "awb"), EngineVoice("flite", "rms", "en", "test", "rms"),
               EngineVoice("flite", "kal16", "en", "validation", "kal"),
               EngineVoice("flite", "slt", "en", "validation", "slt")]
    for language in ("de", "fr", "es", "zh"):
        base = _ESPEAK_LANGUAGE[language]
        voices += [EngineVoice("espeak-ng", f"{base}+{v}", language, "train", f"espeak-{base}-{v}") for v in TRAIN_VARIANTS]
        voices += [EngineVoice("espeak-ng", f"{base}+{v}", language, "test", f"espeak-{base}-{v}") for v in TEST_VARIANTS]
    return tuple(voices)


REGISTRY = _registry()


def voices_for(language: str, split: str, engines: tuple[str, ...] = ENGINES) -> list[EngineVoice]:
    """The installed voices of `language` for `split` (validation falls back to training voices
    for languages that have no validation voice)."""
    chosen = [v for v in REGISTRY if v.language == language and v.split == split and v.engine in engines]
    if not chosen and split == "validation":
        chosen = [v for v in REGISTRY if v.language == language and v.split == "train" and v.engine in engines]
    return [v for v in chosen if available(v)]


def missing_engines() -> list[str]:
    """Engines whose program is not installed, with the Debian packages that bring them."""
    return [f"{e} (apt-get install {_ENGINE_PACKAGES[e]})" for e in ENGINES if shutil.which(e) is None]


_FESTIVAL_VOICES = Path("/usr/share/festival/voices")


def available(voice: EngineVoice) -> bool:
    if shutil.which(voice.engine) is None:
        return False
    if voice.engine == "festival":
        return any(_FESTIVAL_VOICES.glob(f"*/{voice.name}"))
    return True


# --- synthesis ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Settings:
    speed: float = 1.0  # > 1 is faster
    semitones: float = 0.0

    def describe(self) -> str:
        return f"x{self.speed:.2f} {self.semitones:+.1f}st"


def random_settings(rng: np.random.Generator) -> Settings:
    return Settings(round(float(rng.uniform(0.85, 1.2)), 2), round(float(rng.uniform(-3.0, 3.0)), 1))


@dataclass(frozen=True)
class Spoken:
    audio: np.ndarray  # float32, 16 kHz, leading/trailing silence trimmed
    words: tuple[TimedWord, ...] | None  # seconds from the start of `audio` (10 ms grid), when the engine tells
    voice: EngineVoice
    settings: Settings

    def describe(self) -> str:
        return f"{self.voice.id} {self.settings.describe()}"


def _engine_text(spoken: str) -> str:
    """What engines are given: the spoken form without quotes (festival reads them inside a Scheme string)."""
    return " ".join(spoken.replace('"', " ").replace("\\", " ").split())


def _read(path: Path) -> np.ndarray:
    samples, rate = sf.read(path, dtype="float32", always_2d=True)
    mono = samples.mean(axis=1)
    return (mono if rate == SAMPLE_RATE else soxr.resample(mono, rate, SAMPLE_RATE)).astype(np.float32)


def _run(command: list[str], what: str) -> None:
    if shutil.which(command[0]) is None:
        package = _ENGINE_PACKAGES.get(command[0], command[0])
        raise MissingToolError(f"{command[0]} is not installed; apt-get install {package}")
    result = subprocess.run(command, capture_output=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{what} failed: {result.stderr.decode(errors='replace').strip()[-500:]}")


def _sox(source: Path, target: Path, effects: list[str]) -> None:
    _run(["sox", str(source), str(target), *effects], f"sox {' '.join(effects)}")


def _espeak(text: str, voice: EngineVoice, settings: Settings, folder: Path) -> np.ndarray:
    wav = folder / "espeak.wav"
    speed = int(round(165 * settings.speed))
    pitch = int(np.clip(50 + 7 * settings.semitones, 0, 99))  # espeak-ng -p 0–99, ~7 steps a semitone
    _run(["espeak-ng", "-w", str(wav), "-v", voice.name, "-s", str(speed), "-p", str(pitch), "--", text],
         f"espeak-ng ({voice.name})")
    return _read(wav)


def _flite(text: str, voice: EngineVoice, settings: Settings, folder: Path) -> np.ndarray:
    raw, shifted = folder / "flite.wav", folder / "flite-pitch.wav"
    _run(["flite", "-voice", voice.name, "--setf", f"duration_stretch={1 / settings.speed:.3f}", "-t", text,
          "-o", str(raw)], f"flite ({voice.name})")
    _sox(raw, shifted, ["pitch", f"{100 * settings.semitones:.0f}"])
    return _read(shifted)


def _festival_batch(texts: list[str], voice: EngineVoice, settings: list[Settings], folder: Path
                    ) -> list[tuple[np.ndarray, list[tuple[str, float, float]]]]:
    """One festival process for many sentences (loading a voice costs ~0.3 s); returns each audio
    (16 kHz) and its words with start and end seconds."""
    hts = voice.name.endswith("_hts")
    lines = [f"(voice_{voice.name})"]
    for i, (text, s) in enumerate(zip(texts, settings)):
        stretch = 1.0 if hts else 1 / s.speed
        lines += [f"(Parameter.set 'Duration_Stretch {stretch:.3f})",
                  f'(set! utt (utt.synth (Utterance Text "{text}")))',
                  f'(format t "UTT\\t{i}\\n")',
                  '(mapcar (lambda (w) (format t "W\\t%s\\t%f\\t%f\\n" (item.name w) '
                  '(item.feat w "R:SylStructure.daughter1.daughter1.segment_start") '
                  '(item.feat w "R:SylStructure.daughtern.daughtern.segment_end"))) (utt.relation.items utt \'Word))',
                  f'(utt.save.wave utt "{folder / f"fest{i}.wav"}" \'riff)']
    script = folder / "batch.scm"
    script.write_text("\n".join(lines) + "\n")
    if shutil.which("festival") is None:
        raise MissingToolError(f"festival is not installed; apt-get install {_ENGINE_PACKAGES['festival']}")
    # festival echoes words in its own 8-bit encoding: a curly quote left in a sentence is not UTF-8
    result = subprocess.run(["festival", "--batch", str(script)], capture_output=True, check=False, text=True,
                            errors="replace")
    if result.returncode != 0:
        raise RuntimeError(f"festival ({voice.name}) failed: {result.stderr.strip()[-500:]}")
    words: list[list[tuple[str, float, float]]] = [[] for _ in texts]
    current = -1
    for line in result.stdout.splitlines():
        fields = line.split("\t")
        if fields[0] == "UTT":
            current = int(fields[1])
        elif fields[0] == "W" and current >= 0:
            words[current].append((fields[1], float(fields[2]), float(fields[3])))
    out = []
    for i, s in enumerate(settings):
        raw, shifted = folder / f"fest{i}.wav", folder / f"fest{i}-var.wav"
        effects = ["pitch", f"{100 * s.semitones:.0f}"] + (["tempo", "-s", f"{s.speed:.3f}"] if hts else [])
        _sox(raw, shifted, effects)
        scale = 1 / s.speed if hts else 1.0
        out.append((_read(shifted), [(w, a * scale, b * scale) for w, a, b in words[i]]))
    return out


def _trim_bounds(audio: np.ndarray, top_db: float = 40.0, frame: int = 64) -> tuple[int, int]:
    kept = trim(audio, top_db, frame)
    if not len(kept):
        return 0, 0
    n = len(audio) // frame
    rms = np.sqrt(np.mean(audio[:n * frame].reshape(n, frame).astype(np.float64) ** 2, axis=1))
    loud = np.flatnonzero(rms > rms.max() * 10 ** (-top_db / 20))
    return int(loud[0] * frame), int((loud[-1] + 1) * frame)


def _timed(words: list[tuple[str, float, float]], expected: list[str], start: int,
           length: int) -> tuple[TimedWord, ...] | None:
    """Festival's words as TimedWords relative to the trimmed audio, on the 10 ms grid; None when
    festival's words are not the reference words (then the item gets no word times)."""
    names = [w.lower().strip("'") for w, _, _ in words]
    if names != [e.strip("'") for e in expected]:
        return None
    offset, limit = start / SAMPLE_RATE, length / SAMPLE_RATE
    timed, previous = [], 0.0
    for word, (_, a, b) in zip(expected, words):
        a = min(max(round(a - offset, 2), previous), limit)
        b = min(max(round(b - offset, 2), a + 0.01), limit)
        timed.append(TimedWord(word, a, b))
        previous = b
    return tuple(timed)


def synthesize_many(spoken: list[str], voice: EngineVoice, settings: list[Settings],
                    words: list[list[str]] | None = None) -> list[Spoken]:
    """Each text spoken by `voice` with its settings, trimmed; festival also returns word times
    (when `words`, the reference words of each text, are given and festival agrees with them)."""
    if len(settings) != len(spoken):
        raise ValueError(f"{len(spoken)} texts but {len(settings)} settings: give one Settings per text")
    if not available(voice):
        raise MissingToolError(f"voice {voice.id} is not installed; apt-get install {_ENGINE_PACKAGES[voice.engine]}")
    texts = [_engine_text(t) for t in spoken]
    if any(not t for t in texts):
        raise ValueError("synthesize_many() got an empty text; every item needs at least one word")
    out = []
    with tempfile.TemporaryDirectory(prefix="voices-") as tmp:
        folder = Path(tmp)
        if voice.engine == "festival":
            results = _festival_batch(texts, voice, settings, folder)
        else:
            make = _espeak if voice.engine == "espeak-ng" else _flite
            results = [(make(t, voice, s, folder), []) for t, s in zip(texts, settings)]
        for i, ((audio, timed), s) in enumerate(zip(results, settings)):
            start, end = _trim_bounds(audio)
            if end <= start:
                raise RuntimeError(f"{voice.id} produced silence for {texts[i]!r}")
            times = _timed(timed, words[i], start, end - start) if words is not None and timed else None
            out.append(Spoken(audio[start:end].copy(), times, voice, s))
    return out


def synthesize(spoken: str, voice: EngineVoice, settings: Settings = Settings(),
               words: list[str] | None = None) -> Spoken:
    return synthesize_many([spoken], voice, [settings], None if words is None else [words])[0]
