"""Batched `workbench.audio.log_mel` against transformers' `WhisperFeatureExtractor`.

Both compute Whisper's log-mel of 32 clips of 30 s cut from the real recordings in
../shared/audio, in the same process, alternating repeat by repeat so that load from other
processes hits both alike. Prints the time per clip (best and median of the repeats), the speed
ratio, and checks that the outputs agree within 1e-5.

    python benchmarks/mel.py [--clips 32] [--repeats 5] [--n-mels 80] [--threads 1 2]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from workbench.audio import N_SAMPLES, SAMPLE_RATE, load_audio, log_mel

SHARED_AUDIO = Path(__file__).resolve().parents[2] / "shared" / "audio"
AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".ogg")


def make_clips(audio_dir: Path, n_clips: int, seed: int = 0) -> list[np.ndarray]:
    """n_clips windows of exactly 30 s of real audio: every recording joined end to end (sorted by
    name, so the order is fixed), tiled until long enough, cut at seeded offsets, with seeded gains."""
    files = sorted(p for p in audio_dir.iterdir() if p.suffix in AUDIO_SUFFIXES)
    if not files:
        sys.exit(f"no audio files in {audio_dir}: pass --audio-dir")
    pieces = [c.audio for f in files for c in load_audio(f, on_long="chunk")]
    stream = np.concatenate(pieces)
    stream = np.tile(stream, -(-2 * N_SAMPLES // len(stream)))  # room for any window offset
    rng = np.random.default_rng(seed)
    offsets = rng.integers(0, len(stream) - N_SAMPLES, n_clips)
    gains = rng.uniform(0.25, 1.0, n_clips).astype(np.float32)
    return [np.ascontiguousarray(stream[o : o + N_SAMPLES] * g) for o, g in zip(offsets, gains)]


def compare(clips: list[np.ndarray], n_mels: int, repeats: int) -> tuple[dict[str, list[float]], float]:
    """Seconds per batch for each candidate, alternating repeat by repeat; and max |difference|."""
    from transformers import WhisperFeatureExtractor

    extractor = WhisperFeatureExtractor(feature_size=n_mels)
    candidates = {
        "WhisperFeatureExtractor": lambda: extractor(clips, sampling_rate=SAMPLE_RATE, return_tensors="np")["input_features"],
        "workbench log_mel": lambda: log_mel(clips, n_mels=n_mels).numpy(),
    }
    baseline, ours = (run() for run in candidates.values())  # warm-up, and the outputs to compare
    times: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(repeats):
        for name, run in candidates.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return times, float(np.abs(baseline - ours).max())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--n-mels", type=int, default=80)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, torch.get_num_threads()],
                        help="torch thread counts to measure (default: 1 and torch's default)")
    parser.add_argument("--audio-dir", type=Path, default=SHARED_AUDIO)
    args = parser.parse_args()

    clips = make_clips(args.audio_dir, args.clips)
    worst_diff = 0.0
    for threads in dict.fromkeys(args.threads):  # in order, without repeats
        torch.set_num_threads(threads)
        times, max_diff = compare(clips, args.n_mels, args.repeats)
        worst_diff = max(worst_diff, max_diff)
        # One thread is the steadier number on a shared machine: a parallel region waits for its
        # slowest thread, and log_mel's cache-sized blocks run many short regions.
        print(f"\n{len(clips)} clips x 30 s, {args.n_mels} mel bins, torch {torch.__version__}, {threads} "
              f"thread(s), {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
        print(f"{'':26s} {'best ms/clip':>13s} {'median ms/clip':>15s}")
        for name, ts in times.items():
            print(f"{name:26s} {min(ts) / len(clips) * 1e3:13.2f} {statistics.median(ts) / len(clips) * 1e3:15.2f}")
        base_t, ours_t = times.values()
        print(f"speed-up: {min(base_t) / min(ours_t):.2f}x (best), "
              f"{statistics.median(base_t) / statistics.median(ours_t):.2f}x (median)")
        print(f"max |difference| {max_diff:.2e} ({'within' if max_diff <= 1e-5 else 'NOT within'} 1e-5)")
    if worst_diff > 1e-5:
        sys.exit(1)


if __name__ == "__main__":
    main()
