"""Cost of capturing attention: `trace()` of a few LLM layers against plain forwards (goal ≤ 1.3×).

Builds a random official-layout Qwen-Audio checkpoint in a temporary directory
(`workbench.models.qwen_audio.official_layout`: the real vocabulary of 155,947 rows, LLM hidden 1024 × 12
layers, encoder 512 × 6 blocks, float32) and 30 s of audio (a 762-position prompt). Then, in the
same process, alternating the three so that load from other processes hits all alike:

- sdpa:  `model.forward` of the model as loaded (fused attention everywhere);
- eager: `model.forward` of the same checkpoint loaded with attn="eager", no weights returned;
- trace: `trace(model, …, capture="llm.layers.*.attn.pattern", layers=[…])`: full (heads, L, L)
  probabilities of the chosen layers, every other layer on the sdpa path.

All three compute logits for the last position only. Reported: best and median seconds, the
ratio trace / eager (the goal) and trace / sdpa, and each call's peak resident memory above the
memory held before it (VmHWM, reset before each call) against trace's own size estimate (the
kept tensors plus one layer's full pattern while it is computed; the bound is `max_bytes`).

    python benchmarks/capture.py [--hidden 1024] [--layers 12] [--capture 3] [--repeats 3] [--threads N]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from workbench.analysis.capture import resolve_capture
from workbench.analysis.positions import label_positions
from workbench.analysis.trace import DEFAULT_MAX_BYTES, check_size, trace
from workbench.models.qwen_audio import load_qwen_audio
from workbench.models.qwen_audio.official_layout import official_config, write_random_checkpoint
from workbench.tags import preset

REPO = Path(__file__).resolve().parents[1]
TIKTOKEN = REPO.parent / "shared" / "fixtures" / "qwen_audio_v1_tiny" / "checkpoint" / "qwen.tiktoken"
GOAL = 1.3


def audio_30s() -> np.ndarray:
    """30 s of a chirp in noise (seeded): any audio does for timing a random model."""
    t = np.arange(30 * 16000) / 16000
    noise = np.random.default_rng(0).normal(0, 0.05, t.size)
    return (0.3 * np.sin(2 * np.pi * (200 + 40 * t) * t) + noise).astype(np.float32)


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def measured(run):
    """(seconds, peak RSS above the RSS before the call in bytes, value)."""
    Path("/proc/self/clear_refs").write_text("5")   # reset the peak-RSS mark to the current RSS
    before = _status_kib("VmRSS")
    start = time.perf_counter()
    value = run()
    seconds = time.perf_counter() - start
    return seconds, (_status_kib("VmHWM") - before) * 1024, value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--capture", type=int, default=3, help="LLM layers whose attention is captured")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = official_config(hidden=args.hidden, layers=args.layers, heads=args.hidden // 64,
                             intermediate=2 * (args.hidden * 11 // 4), audio_state=512, audio_layers=6, audio_heads=8)
    with tempfile.TemporaryDirectory() as scratch:
        write_random_checkpoint(scratch, config, dtype=torch.float32,
                                tokenizer=TIKTOKEN if TIKTOKEN.is_file() else None)
        sdpa = load_qwen_audio(scratch)
        eager = load_qwen_audio(scratch, attn="eager")
    chosen = np.linspace(0, args.layers - 1, args.capture).round().astype(int).tolist()
    inputs = sdpa.inputs(preset("librispeech"), audio_30s())
    parts = sdpa.adapter
    points = resolve_capture("llm.layers.*.attn.pattern", parts.points, chosen)
    estimate = check_size(points, label_positions(sdpa, inputs), None, None, None, parts.encoder_frames(inputs), 0,
                          "last", parts.unembed.weight.shape[0], None, DEFAULT_MAX_BYTES)
    print(f"model: LLM hidden {args.hidden} × {args.layers} layers ({args.hidden // 64} heads), encoder 512 × 6, "
          f"{sdpa.describe()['total'] / 1e6:.0f} M parameters, float32, {torch.get_num_threads()} threads; "
          f"prompt {inputs.length} positions; capturing layers {chosen}")

    runs = {
        "sdpa": lambda: sdpa.forward(inputs, logits_to_keep=1),
        "eager": lambda: eager.forward(inputs, logits_to_keep=1),
        "trace": lambda: trace(sdpa, inputs, capture="llm.layers.*.attn.pattern", layers=chosen, logits="last"),
    }
    times: dict[str, list[float]] = {name: [] for name in runs}
    peaks: dict[str, list[int]] = {name: [] for name in runs}
    results = {}
    runs["sdpa"]()   # warm-up: first-call allocations and kernel selection
    for _ in range(args.repeats):
        for name, run in runs.items():
            seconds, peak, results[name] = measured(run)
            times[name].append(seconds)
            peaks[name].append(peak)

    captured = results["trace"]
    kept = sum(captured[f"llm.layers.{i}.attn.pattern"].numel() * 4 for i in chosen)
    agree = float((captured.logits[-1] - results["sdpa"].logits[0, -1]).abs().max())
    print(f"kept: {kept / 2**20:.1f} MiB of patterns; trace's peak estimate {estimate / 2**20:.1f} MiB "
          f"(max_bytes {DEFAULT_MAX_BYTES / 2**30:.0f} GiB); "
          f"logits vs sdpa max |Δ| {agree:.1e}")
    print(f"{'':>8} {'best s':>8} {'median s':>9} {'peak MiB':>9}")
    for name in runs:
        print(f"{name:>8} {min(times[name]):>8.2f} {statistics.median(times[name]):>9.2f} "
              f"{max(peaks[name]) / 2**20:>9.0f}")
    best = {name: min(values) for name, values in times.items()}
    ratio = best["trace"] / best["eager"]
    extra = max(peaks["trace"]) - max(peaks["sdpa"])
    print(f"trace / eager forward: {ratio:.2f}× (goal ≤ {GOAL}×): {'met' if ratio <= GOAL else 'NOT met'}; "
          f"trace / sdpa forward: {best['trace'] / best['sdpa']:.2f}×")
    print(f"peak memory of trace above the sdpa forward: {extra / 2**20:.0f} MiB; within the estimate "
          f"({estimate / 2**20:.0f} MiB): {extra <= estimate}")
    if agree > 1e-4:
        sys.exit("capturing changed the logits")


if __name__ == "__main__":
    main()
