"""Acoustic augmentation for the v2 corpus: noise at several SNRs, reverberation, telephone band,
level changes. numpy/scipy rather than sox: no subprocess or temporary file per clip, and every
draw comes from the item's own generator, so a corpus is reproducible from its seed.

No effect moves sound in time (the reverberation's impulse response starts with the direct path at
lag 0 and the telephone filter is zero-phase), so word times stay exact for SRWT.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import soxr
from scipy import signal

SAMPLE_RATE = 16_000
SNRS_DB = (0, 5, 10, 20, 30)  # noise levels the corpus draws from (and the test split reports apart)
SNR_SHARES = (0.1, 0.15, 0.25, 0.25, 0.25)  # harsh levels rarer: a tiny model must still learn the words
NOISE_KINDS = ("white", "pink", "brown", "babble")


@dataclass(frozen=True)
class Augmentation:
    noise: str | None = None  # a NOISE_KINDS entry
    snr_db: float | None = None
    rt60: float | None = None  # seconds of reverberation (decay by 60 dB)
    telephone: bool = False
    gain_db: float = 0.0

    def describe(self) -> str:
        parts = []
        if self.noise:
            parts.append(f"{self.noise} noise {self.snr_db:.0f} dB SNR")
        if self.rt60:
            parts.append(f"reverb rt60 {self.rt60:.2f} s")
        if self.telephone:
            parts.append("telephone")
        if self.gain_db:
            parts.append(f"gain {self.gain_db:+.0f} dB")
        return ", ".join(parts) or "clean"


def noise(kind: str, n: int, rng: np.random.Generator, speech: np.ndarray | None = None) -> np.ndarray:
    """Unit-power noise of `kind`. Babble is the clip's own speech, reversed and circularly shifted
    several times: speech-shaped but unintelligible, needing no other recordings."""
    if kind == "white":
        x = rng.standard_normal(n)
    elif kind in ("pink", "brown"):
        spectrum = np.fft.rfft(rng.standard_normal(n))
        f = np.maximum(np.fft.rfftfreq(n), 1.0 / n)
        x = np.fft.irfft(spectrum / (np.sqrt(f) if kind == "pink" else f), n)
    elif kind == "babble":
        if speech is None or not np.any(speech):
            raise ValueError("babble noise is made from speech: pass the clip as `speech`")
        source = speech[::-1].astype(np.float64)
        x = sum(np.roll(np.resize(source, n), int(rng.integers(n))) for _ in range(4))
    else:
        raise ValueError(f"noise kind {kind!r}: use one of {', '.join(NOISE_KINDS)}")
    x = np.asarray(x, dtype=np.float64)
    power = np.mean(x ** 2)
    return x / np.sqrt(power) if power > 0 else x


def add_noise(audio: np.ndarray, snr_db: float, kind: str, rng: np.random.Generator) -> np.ndarray:
    """`audio` plus noise at `snr_db` relative to the audio's mean power over its active part."""
    x = audio.astype(np.float64)
    active = x[np.abs(x) > 0.01 * np.max(np.abs(x))] if np.any(x) else x
    power = float(np.mean(active ** 2)) if active.size else 0.0
    return x + noise(kind, len(x), rng, audio) * np.sqrt(power / 10 ** (snr_db / 10))


def impulse_response(rt60: float, rng: np.random.Generator) -> np.ndarray:
    """A synthetic room: direct path at lag 0, then exponentially decaying noise from 5 ms on, low-passed
    as air and walls do."""
    n = int(rt60 * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    tail = rng.standard_normal(n) * np.exp(-6.91 * t / rt60)  # -60 dB at rt60
    tail[: int(0.005 * SAMPLE_RATE)] = 0
    b, a = signal.butter(2, 4000 / (SAMPLE_RATE / 2))
    tail = signal.lfilter(b, a, tail)
    ir = 0.5 * tail / np.sqrt(np.sum(tail ** 2))
    ir[0] = 1.0
    return ir


def reverberate(audio: np.ndarray, rt60: float, rng: np.random.Generator) -> np.ndarray:
    return signal.fftconvolve(audio.astype(np.float64), impulse_response(rt60, rng))[: len(audio)]


def telephone(audio: np.ndarray) -> np.ndarray:
    """Narrow band: 300–3400 Hz (zero-phase), 8 kHz μ-law (8 bit), back to 16 kHz."""
    sos = signal.butter(4, [300, 3400], btype="band", fs=SAMPLE_RATE, output="sos")
    x = signal.sosfiltfilt(sos, audio.astype(np.float64))
    narrow = soxr.resample(x, SAMPLE_RATE, 8000)
    peak = max(float(np.max(np.abs(narrow))), 1e-9)
    mu = 255.0
    y = np.sign(narrow / peak) * np.log1p(mu * np.abs(narrow / peak)) / np.log1p(mu)
    y = np.round(y * 127) / 127  # 8-bit companded code
    narrow = np.sign(y) * np.expm1(np.abs(y) * np.log1p(mu)) / mu * peak
    return soxr.resample(narrow, 8000, SAMPLE_RATE)[: len(audio)]


def random_augmentation(rng: np.random.Generator, clean_share: float = 0.3) -> Augmentation:
    """Clean 30 % of the time; else noise (75 %; 0–30 dB SNR, at least 10 dB when stacked with another
    effect), reverberation (30 %), telephone (15 %); and always a level change of −20…+6 dB (peak
    capped at 0.99)."""
    gain = float(np.round(rng.uniform(-20, 6)))
    if rng.random() < clean_share:
        return Augmentation(gain_db=gain)
    kind = str(rng.choice(NOISE_KINDS)) if rng.random() < 0.75 else None
    snr = float(rng.choice(SNRS_DB, p=SNR_SHARES)) if kind else None
    rt60 = round(float(rng.uniform(0.2, 0.6)), 2) if rng.random() < 0.3 else None
    phone = bool(rng.random() < 0.15)
    if snr is not None and (rt60 or phone):  # stacked degradations keep the noise mild: still intelligible
        snr = max(snr, 10.0)
    return Augmentation(kind, snr, rt60, phone, gain)


def apply(audio: np.ndarray, augmentation: Augmentation, rng: np.random.Generator) -> np.ndarray:
    """Reverberation, then telephone band, then noise, then level (capped at a 0.99 peak)."""
    x = audio.astype(np.float64)
    if augmentation.rt60:
        x = reverberate(x, augmentation.rt60, rng)
    if augmentation.telephone:
        x = telephone(x)
    if augmentation.noise:
        x = add_noise(x, float(augmentation.snr_db), augmentation.noise, rng)
    peak = float(np.max(np.abs(x))) if x.size else 0.0
    if peak > 0:
        x = x / peak * 0.5 * 10 ** (augmentation.gain_db / 20)  # gain relative to a 0.5 peak
        x = x * min(1.0, 0.99 / float(np.max(np.abs(x))))
    return x.astype(np.float32)


def noise_only(seconds: float, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """A clip of noise alone (no speech) and its description: for "noise in → no transcript"."""
    n = int(seconds * SAMPLE_RATE)
    kind = str(rng.choice(("white", "pink", "brown")))
    level = 10 ** (rng.uniform(-40, -10) / 20)
    x = noise(kind, n, rng) * level
    if rng.random() < 0.3:  # a hum as well
        hz = float(rng.choice((50.0, 60.0)))
        x = x + level * np.sin(2 * np.pi * hz * np.arange(n) / SAMPLE_RATE)
    return np.clip(x, -0.99, 0.99).astype(np.float32), f"{kind} noise {20 * np.log10(level):.0f} dBFS"
