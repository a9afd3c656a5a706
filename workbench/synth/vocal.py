"""Non-speech vocal sounds for vocal sound classification (VSC), VocalSound's six labels.

These are *proxies*: espeak-ng acting out "ha ha ha" or "ah choo", and shaped noise for coughs
and sniffs. They share nothing with real vocal sounds beyond a coarse resemblance, but each label
has a consistent signature and an exact label. A recipe (the discrete choices: text, voice
variant, number of bursts, filter band) is the content key that decides an item's split; levels,
timings and noise come from the item's generator.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .sounds import SAMPLE_RATE, band, fade, seconds, tone, unit, white
from .speech import VARIANTS, Voice, synthesize, trim

LABELS = ("laughter", "sigh", "cough", "throat clearing", "sneeze", "sniff")
_TEXTS = {
    "laughter": ("ha ha ha", "ha ha", "ha ha ha ha", "he he he", "ho ho ho", "hee hee hee", "ha ha he he"),
    "sigh": ("haaah", "hhaaa", "ahhh", "ohhh"),
    "throat clearing": ("hm hmm", "ahem", "uh hum", "hrm hm"),
    "sneeze": ("ah choo", "a choo", "ah tishoo", "hatchoo"),
}
_BANDS = ((200, 2500), (250, 3000), (300, 3500), (200, 4000), (400, 3000), (150, 2000))


@dataclass(frozen=True)
class VocalRecipe:
    label: str
    choices: tuple[int, ...]  # label-specific discrete choices, see sample_vocal

    @property
    def key(self) -> str:
        return f"{self.label}:{','.join(map(str, self.choices))}"


def sample_vocal(rng: np.random.Generator, label: str | None = None) -> VocalRecipe:
    """A random recipe (of `label`, or of a random label)."""
    label = label if label is not None else LABELS[rng.integers(len(LABELS))]
    if label not in LABELS:
        raise ValueError(f"unknown vocal sound {label!r}; labels: {', '.join(LABELS)}")
    if label in _TEXTS:  # (text, voice variant)
        return VocalRecipe(label, (int(rng.integers(len(_TEXTS[label]))), int(rng.integers(len(VARIANTS)))))
    if label == "cough":  # (bursts, band, voiced pitch step)
        return VocalRecipe(label, (int(rng.integers(1, 4)), int(rng.integers(len(_BANDS))), int(rng.integers(4))))
    return VocalRecipe(label, (int(rng.integers(1, 4)), int(rng.integers(8)), int(rng.integers(4))))  # sniff:
    # (sniffs, band, pace)


def render_vocal(recipe: VocalRecipe, rng: np.random.Generator) -> np.ndarray:
    """The recipe's audio at 16 kHz, with 0.1–0.4 s of silence around it, peak 0.3–0.9."""
    label, choices = recipe.label, recipe.choices
    if label in _TEXTS:
        text, variant = _TEXTS[label][choices[0]], VARIANTS[choices[1]]
        speed, pitch = {"laughter": ((200, 260), (60, 96)), "sigh": ((80, 110), (10, 35)),
                        "throat clearing": ((120, 160), (5, 25)), "sneeze": ((180, 230), (50, 80))}[label]
        audio = trim(synthesize(text, Voice("en", variant, int(rng.integers(*speed)), int(rng.integers(*pitch)))))
        if label == "sigh":  # breathy exhalation under a quiet voice
            breath = unit(band(white(rng, len(audio) / SAMPLE_RATE + 0.3), 300, 2000))
            breath *= np.exp(-np.arange(len(breath)) / (0.4 * SAMPLE_RATE)) * np.minimum(1, np.arange(len(breath)) / 1600)
            audio = np.concatenate([audio * 0.4, np.zeros(len(breath) - len(audio))]) + breath
        elif label == "throat clearing":  # a rattle on top of the voice
            rattle = band(white(rng, len(audio) / SAMPLE_RATE), 100, 800)
            rattle *= 0.5 + 0.5 * np.sign(np.sin(2 * np.pi * rng.uniform(25, 40) * np.arange(len(audio)) / SAMPLE_RATE))
            audio = unit(audio) + 0.4 * unit(rattle)
        elif label == "sneeze":  # the burst of the "choo"
            burst = unit(band(white(rng, 0.25), 2000, 7000)) * np.exp(-np.arange(seconds(0.25)) / 1200)
            start = max(0, len(audio) - len(burst) - seconds(0.05))
            audio = unit(audio)
            audio[start:start + len(burst)] += 0.8 * burst[:len(audio) - start]
    elif label == "cough":
        low, high = _BANDS[choices[1]]
        bursts = []
        for _ in range(choices[0]):
            duration = float(rng.uniform(0.15, 0.3))
            envelope = np.minimum(1, np.arange(seconds(duration)) / 80) * np.exp(-np.arange(seconds(duration)) / 900)
            voiced = tone(120 + 30 * choices[2] + rng.uniform(-10, 10), duration, (1, 0.7, 0.5, 0.3))
            bursts += [unit(band(white(rng, duration), low, high)) * envelope + 0.3 * voiced * envelope,
                       np.zeros(seconds(rng.uniform(0.1, 0.25)))]
        audio = np.concatenate(bursts[:-1])
    else:  # sniff: short high-passed inhalations with a rising envelope and a sharp stop
        low = 1200 + 300 * choices[1]
        sniffs = []
        for _ in range(choices[0]):
            duration = float(rng.uniform(0.12, 0.25))
            rising = np.linspace(0.2, 1, seconds(duration)) ** 2
            sniffs += [fade(unit(band(white(rng, duration), low, 6500)) * rising, 0.01, 0.005),
                       np.zeros(seconds(0.12 + 0.06 * choices[2] + rng.uniform(0, 0.1)))]
        audio = np.concatenate(sniffs[:-1])
    audio = unit(np.asarray(audio, dtype=np.float64)) * rng.uniform(0.3, 0.9)
    pad = [np.zeros(seconds(rng.uniform(0.1, 0.4))) for _ in range(2)]
    return np.concatenate([pad[0], audio, pad[1]]).astype(np.float32)
