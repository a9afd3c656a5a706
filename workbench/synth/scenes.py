"""Acoustic scene textures for scene classification (ASC), TUT2017-style labels.

A scene is a bed of noise plus the sparse events that identify it (traffic passes for a street,
babble and cup clinks for a cafe, birds and wind for a park, ...). A scene *layout* — the
numbers and levels of its ingredients — is drawn from the layout index alone, so the layout index
is the content key that splits scenes into train/validation/test; the noise itself comes from
the item's generator.
"""
from __future__ import annotations

import numpy as np

from . import grammar
from .sounds import SAMPLE_RATE, band, bell, brown, chirp, fade, knock, seconds, tone, unit, white, wind
from .speech import VARIANTS, Voice, synthesize

SCENES = ("street", "cafe", "park", "office", "train", "beach")
N_LAYOUTS = 100  # layouts per scene; each lands in one split


def _place(bed: np.ndarray, event: np.ndarray, start: int, gain: float) -> None:
    end = min(len(bed), start + len(event))
    if end > start:
        bed[start:end] += gain * event[:end - start]


def _swell(duration: float, centre: float, width: float) -> np.ndarray:
    t = np.arange(seconds(duration)) / SAMPLE_RATE
    return np.exp(-0.5 * ((t - centre) / width) ** 2)


def _street(layout: np.random.Generator, rng: np.random.Generator, duration: float) -> np.ndarray:
    bed = 0.5 * unit(band(brown(rng, duration), 30, 500))
    for _ in range(int(layout.integers(1, 4))):  # cars passing: a swell of filtered noise
        car = unit(band(white(rng, duration), 100, 1500)) * _swell(duration, rng.uniform(0, duration), 0.5)
        bed += layout.uniform(0.4, 0.9) * car
    if layout.random() < 0.5:  # a short horn
        horn = fade(tone(layout.uniform(350, 450), 0.3, (1, 0.6, 0.4, 0.3)), 0.01, 0.05)
        _place(bed, unit(horn), seconds(rng.uniform(0, duration - 0.4)), layout.uniform(0.3, 0.6))
    return bed


def _cafe(layout: np.random.Generator, rng: np.random.Generator, duration: float) -> np.ndarray:
    bed = 0.15 * unit(band(white(rng, duration), 200, 3000))
    for _ in range(int(layout.integers(3, 6))):  # overlapping talkers, low and muffled
        voice = Voice(grammar.LANGUAGES[rng.integers(4)], VARIANTS[rng.integers(len(VARIANTS))],
                      int(rng.integers(150, 200)), int(rng.integers(30, 70)))
        talk = synthesize(grammar.sample_sentence(rng).speech_text(voice.language), voice)
        _place(bed, unit(band(talk, 150, 2500)), seconds(rng.uniform(0, duration - 0.5)),
               layout.uniform(0.3, 0.6))
    for _ in range(int(layout.integers(1, 4))):  # cups and cutlery
        clink = fade(tone(rng.uniform(2500, 4000), 0.12, (1, 0.5)) * np.exp(-np.arange(seconds(0.12)) / 300))
        _place(bed, clink, seconds(rng.uniform(0, duration)), layout.uniform(0.2, 0.5))
    return bed


def _park(layout: np.random.Generator, rng: np.random.Generator, duration: float) -> np.ndarray:
    bed = layout.uniform(0.3, 0.6) * wind(rng, duration)
    for _ in range(int(layout.integers(2, 6))):
        _place(bed, unit(chirp(rng)), seconds(rng.uniform(0, duration)), layout.uniform(0.2, 0.5))
    return bed


def _office(layout: np.random.Generator, rng: np.random.Generator, duration: float) -> np.ndarray:
    mains = layout.choice([50.0, 60.0])
    hum = tone(mains, duration, (0.3, 1.0, 0.4, 0.3)) * layout.uniform(0.1, 0.3)
    bed = hum + 0.3 * unit(band(white(rng, duration), 100, 1200, order=2))  # ventilation
    typing_rate = layout.uniform(4, 9)  # key presses a second, in bursts
    t = 0.0
    while t < duration:
        _place(bed, unit(knock(rng)) * 0.5, seconds(t), layout.uniform(0.2, 0.4))
        t += rng.exponential(1 / typing_rate) + (rng.uniform(0.5, 1.5) if rng.random() < 0.08 else 0)
    return bed


def _train(layout: np.random.Generator, rng: np.random.Generator, duration: float) -> np.ndarray:
    bed = unit(band(brown(rng, duration), 20, 300)) + 0.2 * unit(band(white(rng, duration), 300, 2000))
    period = layout.uniform(0.7, 1.3)  # wheels over rail joints: clack-clack each period
    t = rng.uniform(0, period)
    while t < duration:
        for offset in (0.0, layout.uniform(0.12, 0.2)):
            _place(bed, unit(knock(rng)), seconds(t + offset), layout.uniform(0.5, 0.9))
        t += period
    return bed


def _beach(layout: np.random.Generator, rng: np.random.Generator, duration: float) -> np.ndarray:
    t = np.arange(seconds(duration)) / SAMPLE_RATE
    swell = 0.5 + 0.5 * np.sin(2 * np.pi * layout.uniform(0.12, 0.25) * t + rng.uniform(0, 6.28)) ** 2
    bed = unit(band(white(rng, duration), 150, 5000, order=2)) * swell
    bed += layout.uniform(0.1, 0.3) * wind(rng, duration)
    if layout.random() < 0.4:  # a distant bell buoy
        _place(bed, unit(bell(rng)), seconds(rng.uniform(0, duration - 1)), 0.15)
    return bed


_SCENES = {"street": _street, "cafe": _cafe, "park": _park, "office": _office, "train": _train, "beach": _beach}


def render_scene(scene: str, layout: int, rng: np.random.Generator, duration: float = 4.0) -> np.ndarray:
    """`duration` seconds of `scene` with layout number `layout` (0 ≤ layout < N_LAYOUTS), peak 0.3–0.9."""
    if scene not in _SCENES:
        raise ValueError(f"unknown scene {scene!r}; scenes: {', '.join(SCENES)}")
    if not 0 <= layout < N_LAYOUTS:
        raise ValueError(f"layout {layout} is out of range; use 0 ≤ layout < {N_LAYOUTS}")
    layout_rng = np.random.default_rng([SCENES.index(scene), layout])
    bed = _SCENES[scene](layout_rng, rng, duration)
    return (fade(unit(bed), 0.05, 0.05) * rng.uniform(0.3, 0.9)).astype(np.float32)
