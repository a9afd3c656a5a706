"""Procedural sound events, numpy only and deterministic given the random generator.

Each event is a crude but recognisable stand-in (a "bark" is a short harmonic burst with a
falling pitch, a "bell" a sum of inharmonic decaying partials): what matters for the nano model is
that every event has its own stable spectro-temporal signature and an exact label. Countable
events occur `count` times; sustained events fill a given duration.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

SAMPLE_RATE = 16_000


def seconds(n: float) -> int:
    return round(n * SAMPLE_RATE)


def _time(duration: float) -> np.ndarray:
    return np.arange(seconds(duration)) / SAMPLE_RATE


def white(rng: np.random.Generator, duration: float) -> np.ndarray:
    return rng.standard_normal(seconds(duration))


def band(x: np.ndarray, low: float | None, high: float | None, order: int = 4) -> np.ndarray:
    """Band-, low- (low=None) or high-pass (high=None) filtering with a Butterworth magnitude
    response, applied in the frequency domain (zero phase; circular, which is harmless for the
    noise beds and padded events filtered here)."""
    spectrum = np.fft.rfft(x)
    f = np.maximum(np.fft.rfftfreq(len(x), 1 / SAMPLE_RATE), 1e-3)
    gain = np.ones_like(f)
    if high:
        gain /= np.sqrt(1 + (f / high) ** (2 * order))
    if low:
        gain /= np.sqrt(1 + (low / f) ** (2 * order))
    return np.fft.irfft(spectrum * gain, n=len(x))


def brown(rng: np.random.Generator, duration: float) -> np.ndarray:
    """Low-frequency rumble: integrated white noise, high-passed to remove the drift (detrended
    first so that the circular filter sees no jump where the walk wraps around)."""
    walk = np.cumsum(white(rng, duration))
    walk -= np.linspace(walk[0], walk[-1], len(walk))
    return band(walk, 20, None, order=2)


def fade(x: np.ndarray, attack: float = 0.005, release: float = 0.005) -> np.ndarray:
    """Linear fade in and out, so that no event starts or stops with a click."""
    x = np.array(x, dtype=np.float64)
    a, r = min(seconds(attack), len(x) // 2), min(seconds(release), len(x) // 2)
    if a:
        x[:a] *= np.linspace(0, 1, a)
    if r:
        x[-r:] *= np.linspace(1, 0, r)
    return x


def unit(x: np.ndarray) -> np.ndarray:
    """Scale to peak 1 (a silent array stays zero)."""
    peak = np.max(np.abs(x)) if len(x) else 0
    return x / peak if peak > 0 else x


def tone(freqs: np.ndarray | float, duration: float, harmonics: tuple[float, ...] = (1.0,)) -> np.ndarray:
    """A harmonic tone following a (possibly time-varying) fundamental `freqs` in Hz."""
    t = _time(duration)
    f = np.broadcast_to(np.asarray(freqs, dtype=np.float64), t.shape)
    phase = 2 * np.pi * np.cumsum(f) / SAMPLE_RATE
    return sum(weight * np.sin((k + 1) * phase) for k, weight in enumerate(harmonics))


def decay(duration: float, time_constant: float) -> np.ndarray:
    return np.exp(-_time(duration) / time_constant)


# ---------------------------------------------------------------------------------------------
# One occurrence of each countable event.
def beep(rng: np.random.Generator, freq: float | None = None) -> np.ndarray:
    freq = freq if freq is not None else float(rng.uniform(600, 2000))
    return fade(tone(freq, float(rng.uniform(0.15, 0.35))), 0.01, 0.01)


def bark(rng: np.random.Generator) -> np.ndarray:
    duration = float(rng.uniform(0.12, 0.22))
    f0 = np.linspace(rng.uniform(450, 650), rng.uniform(280, 380), seconds(duration))
    voiced = tone(f0, duration, (1.0, 0.8, 0.6, 0.5, 0.3, 0.2))
    rough = band(white(rng, duration), 300, 3000)
    envelope = np.minimum(1, _time(duration) / 0.01) * decay(duration, duration / 2.5)
    return fade(unit(voiced + 0.6 * unit(rough)) * envelope)


def bell(rng: np.random.Generator) -> np.ndarray:
    f = float(rng.uniform(500, 1200))
    duration = float(rng.uniform(0.7, 1.1))
    partials = ((1.0, 1.0), (2.0, 0.6), (2.76, 0.5), (5.4, 0.3), (8.93, 0.2))
    x = sum(w * np.sin(2 * np.pi * f * r * _time(duration)) * decay(duration, duration / (2 + r))
            for r, w in partials)
    return fade(x, 0.002, 0.02)


def drum(rng: np.random.Generator) -> np.ndarray:
    duration = float(rng.uniform(0.25, 0.4))
    f0 = rng.uniform(50, 70) + rng.uniform(80, 120) * np.exp(-_time(duration) / 0.03)
    body = tone(f0, duration) * decay(duration, duration / 4)
    click = band(white(rng, duration), 1000, 6000) * decay(duration, 0.008)
    return fade(body + 0.5 * click, 0.001, 0.02)


def knock(rng: np.random.Generator) -> np.ndarray:
    duration = 0.09
    f = float(rng.uniform(180, 320))
    wood = np.sin(2 * np.pi * f * _time(duration)) * decay(duration, 0.015)
    click = band(white(rng, duration), 800, 4000) * decay(duration, 0.003)
    return fade(wood + 0.4 * click, 0.0005, 0.01)


def chirp(rng: np.random.Generator) -> np.ndarray:
    """A bird call: 2–4 fast upward sweeps in quick succession, read as one chirp."""
    notes = []
    for _ in range(int(rng.integers(2, 5))):
        duration = float(rng.uniform(0.04, 0.08))
        sweep = np.linspace(rng.uniform(2000, 3000), rng.uniform(3800, 5500), seconds(duration))
        notes += [fade(tone(sweep, duration), 0.005, 0.01), np.zeros(seconds(rng.uniform(0.02, 0.05)))]
    return np.concatenate(notes[:-1])


# ---------------------------------------------------------------------------------------------
# Sustained events (fill `duration`).
def siren(rng: np.random.Generator, duration: float) -> np.ndarray:
    rate, low, high = rng.uniform(0.3, 0.8), rng.uniform(550, 700), rng.uniform(1100, 1400)
    f0 = low + (high - low) * 0.5 * (1 - np.cos(2 * np.pi * rate * _time(duration) + rng.uniform(0, 6.28)))
    return fade(tone(f0, duration, (1.0, 0.4, 0.2)), 0.2, 0.2)


def water(rng: np.random.Generator, duration: float) -> np.ndarray:
    """Running water: band noise with fast random flutter and bubble blips."""
    base = band(white(rng, duration), 400, 4000)
    flutter = np.repeat(rng.uniform(0.4, 1.0, seconds(duration) // 160 + 1), 160)[:len(base)]
    x = unit(base * band(flutter, None, 40, order=2))
    for onset in rng.uniform(0, max(duration - 0.05, 0.01), int(duration * 12)):
        blip = tone(np.linspace(rng.uniform(400, 900), rng.uniform(1000, 2000), seconds(0.03)), 0.03)
        start = seconds(onset)
        x[start:start + len(blip)] += 0.3 * blip[:len(x) - start] * np.hanning(len(blip))[:len(x) - start]
    return fade(x, 0.1, 0.1)


def wind(rng: np.random.Generator, duration: float) -> np.ndarray:
    """Wind: low-passed noise with slow gusts."""
    gusts = 0.55 + 0.45 * np.sin(2 * np.pi * rng.uniform(0.1, 0.4) * _time(duration) + rng.uniform(0, 6.28))
    return fade(unit(band(white(rng, duration), 80, 900, order=2)) * gusts, 0.3, 0.3)


def engine(rng: np.random.Generator, duration: float) -> np.ndarray:
    """An idling engine: low pulsing harmonics plus rumble."""
    f0 = rng.uniform(28, 45) * (1 + 0.03 * np.sin(2 * np.pi * 0.7 * _time(duration)))
    hum = tone(f0, duration, (1.0, 0.9, 0.7, 0.5, 0.4, 0.3, 0.2))
    return fade(unit(hum) + 0.5 * unit(brown(rng, duration)), 0.2, 0.2)


# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Event:
    """A sound event with its words: captions, counting and presence questions use them."""
    name: str  # label, also the one-word answer to "which comes first?"
    sustained: bool
    caption: str  # clause for captions: "a dog barks"
    count_question: str  # "How many times does the dog bark?"
    presence_question: str  # "Is there a dog barking?"
    phrase: str  # noun phrase for chat answers: "a dog barking"


EVENTS: dict[str, Event] = {e.name: e for e in (
    Event("beep", False, "a machine beeps", "How many beeps are there?", "Is there a beep?", "a machine beeping"),
    Event("dog", False, "a dog barks", "How many times does the dog bark?", "Is there a dog barking?", "a dog barking"),
    Event("bell", False, "a bell rings", "How many times does the bell ring?", "Is there a bell ringing?", "a bell ringing"),
    Event("drum", False, "a drum is hit", "How many times is the drum hit?", "Is there a drum?", "a drum being hit"),
    Event("knock", False, "someone knocks", "How many knocks are there?", "Is someone knocking?", "someone knocking"),
    Event("bird", False, "a bird chirps", "How many times does the bird chirp?", "Is there a bird chirping?",
          "a bird chirping"),
    Event("siren", True, "a siren wails", "", "Is there a siren?", "a siren wailing"),
    Event("water", True, "water runs", "", "Is there running water?", "water running"),
    Event("wind", True, "the wind blows", "", "Is the wind blowing?", "the wind blowing"),
    Event("engine", True, "an engine idles", "", "Is there an engine running?", "an engine idling"),
)}
COUNTABLE = tuple(name for name, e in EVENTS.items() if not e.sustained)
SUSTAINED = tuple(name for name, e in EVENTS.items() if e.sustained)

_ONE_SHOT: dict[str, Callable[[np.random.Generator], np.ndarray]] = {
    "beep": beep, "dog": bark, "bell": bell, "drum": drum, "knock": knock, "bird": chirp}
_FILL: dict[str, Callable[[np.random.Generator, float], np.ndarray]] = {
    "siren": siren, "water": water, "wind": wind, "engine": engine}


def occurrence(name: str, rng: np.random.Generator, **kwargs: float) -> np.ndarray:
    """One occurrence of a countable event, peak 1."""
    if name not in _ONE_SHOT:
        raise ValueError(f"{name!r} is not a countable event; countable: {', '.join(COUNTABLE)}")
    return unit(_ONE_SHOT[name](rng, **kwargs))


def sustained(name: str, rng: np.random.Generator, duration: float) -> np.ndarray:
    """A sustained event lasting `duration` seconds, peak 1."""
    if name not in _FILL:
        raise ValueError(f"{name!r} is not a sustained event; sustained: {', '.join(SUSTAINED)}")
    return unit(_FILL[name](rng, duration))
