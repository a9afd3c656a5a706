"""Event mixtures for captioning (AAC) and question answering (AQA).

A mixture is one or two foreground events in sequence, each repeated 1–4 times, optionally over
a sustained background event: "A bell rings twice and then a dog barks while a siren wails."
The caption is a function of the plan only, so it is the mixture's content key: AAC and AQA items
with the same caption are in the same split. Rendering draws the acoustic details (pitches, gaps,
levels) and returns where every occurrence lies, which the AQA questions are computed from.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .sounds import COUNTABLE, EVENTS, SAMPLE_RATE, SUSTAINED, occurrence, seconds, sustained

COUNT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight")
_TIMES = {1: "", 2: " twice", 3: " three times", 4: " four times"}


@dataclass(frozen=True)
class Mixture:
    foreground: tuple[tuple[str, int], ...]  # (countable event, count) in order; 1 or 2 distinct events
    background: str | None = None  # a sustained event under the whole clip

    def caption(self) -> str:
        """The Clotho-style caption: sentence case, one sentence, final period."""
        clauses = [EVENTS[name].caption + _TIMES[count] for name, count in self.foreground]
        text = " and then ".join(clauses)
        if self.background:
            text = f"{text} while {EVENTS[self.background].caption}" if clauses else EVENTS[self.background].caption
        return text[0].upper() + text[1:] + "."

    def events(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.foreground) + ((self.background,) if self.background else ())


def sample_mixture(rng: np.random.Generator) -> Mixture:
    """A random plan: a background alone (10%), one event (40%), two events in sequence (50%);
    a background under the foreground half of the time."""
    if rng.random() < 0.1:
        return Mixture((), SUSTAINED[rng.integers(len(SUSTAINED))])
    n = 1 if rng.random() < 0.45 else 2
    names = rng.choice(len(COUNTABLE), size=n, replace=False)
    foreground = tuple((COUNTABLE[i], int(rng.integers(1, 5))) for i in names)
    background = SUSTAINED[rng.integers(len(SUSTAINED))] if rng.random() < 0.5 else None
    return Mixture(foreground, background)


@dataclass(frozen=True)
class Occurrence:
    event: str
    start: float  # seconds
    end: float
    freq: float | None = None  # beeps only: what "which beep is higher" is about


@dataclass(frozen=True)
class RenderedMixture:
    audio: np.ndarray
    occurrences: tuple[Occurrence, ...]  # foreground occurrences in time order


def render(mixture: Mixture, rng: np.random.Generator) -> RenderedMixture:
    """The mixture's audio at 16 kHz (peak 0.3–0.9) and the time of every foreground occurrence.

    Beeps in one clip take distinct pitches at least four semitones apart, so that "is the first
    beep higher than the last?" always has a clear answer."""
    pieces: list[tuple[int, np.ndarray, Occurrence]] = []
    position = seconds(rng.uniform(0.2, 0.6))
    for name, count in mixture.foreground:
        freqs = _distinct_beep_freqs(rng, count) if name == "beep" else [None] * count
        for freq in freqs:
            audio = occurrence(name, rng, **({"freq": freq} if freq else {}))
            audio = audio * rng.uniform(0.6, 1.0)
            start = position
            pieces.append((start, audio, Occurrence(name, start / SAMPLE_RATE, (start + len(audio)) / SAMPLE_RATE, freq)))
            position += len(audio) + seconds(rng.uniform(0.15, 0.45))
        position += seconds(rng.uniform(0.2, 0.5))
    total = max(position, seconds(rng.uniform(2.0, 4.0)))
    mix = np.zeros(total)
    if mixture.background:
        level = rng.uniform(0.2, 0.4) if mixture.foreground else 1.0
        mix += level * sustained(mixture.background, rng, total / SAMPLE_RATE)
    for start, audio, _ in pieces:
        mix[start:start + len(audio)] += audio
    peak = np.max(np.abs(mix))
    mix = mix * (rng.uniform(0.3, 0.9) / peak)
    return RenderedMixture(mix.astype(np.float32), tuple(o for _, _, o in pieces))


def _distinct_beep_freqs(rng: np.random.Generator, count: int) -> list[float]:
    semitones = rng.choice(np.arange(0, 25, 4), size=count, replace=False)  # ≥ 4 semitones apart
    return [float(600 * 2 ** (s / 12)) for s in semitones]


# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Question:
    kind: str  # count, presence, order, pitch
    text: str
    answer: str  # one lowercase word, as in ClothoAQA


def sample_question(mixture: Mixture, rendered: RenderedMixture, rng: np.random.Generator) -> Question:
    """A question whose answer follows from the plan and rendering: counting, presence (yes/no),
    order of two events, and comparing the pitch of the first and last beep (yes/no)."""
    kinds = ["presence"]
    if mixture.foreground:
        kinds.append("count")
    if len(mixture.foreground) == 2:
        kinds.append("order")
    beeps = [o for o in rendered.occurrences if o.event == "beep"]
    if len(beeps) >= 2:
        kinds.append("pitch")
    kind = kinds[rng.integers(len(kinds))]
    if kind == "count":
        name, count = mixture.foreground[rng.integers(len(mixture.foreground))]
        return Question(kind, EVENTS[name].count_question, COUNT_WORDS[count])
    if kind == "order":
        (first, _), (second, _) = mixture.foreground
        a, b = (first, second) if rng.random() < 0.5 else (second, first)
        return Question(kind, f"Which sound comes first, the {a} or the {b}?", first)
    if kind == "pitch":
        higher = beeps[0].freq > beeps[-1].freq
        return Question(kind, "Is the first beep higher than the last beep?", "yes" if higher else "no")
    present = mixture.events()
    if rng.random() < 0.5:
        name = present[rng.integers(len(present))]
        return Question(kind, EVENTS[name].presence_question, "yes")
    absent = [n for n in EVENTS if n not in present]
    return Question(kind, EVENTS[absent[rng.integers(len(absent))]].presence_question, "no")
