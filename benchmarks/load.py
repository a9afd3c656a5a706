"""Peak memory of `load_qwen_audio` over the bytes of the weights it loads (goal ≤ 1.15×).

Writes a deterministic official-layout checkpoint of about 1.7 GB into a temporary directory:
the real vocabulary (155,947 rows), an LLM of hidden 1280 × 20 layers, an encoder of 640 × 8
blocks, float16 on disk, in ~200 MB shards with `model.safetensors.index.json`
(`workbench.models.qwen_audio.official_layout.write_random_checkpoint`), and the fixture's `qwen.tiktoken`
when ../shared is there, else the synthetic one (same size). Then, for each load dtype, a fresh
subprocess imports everything, resets its peak-RSS mark, loads, and reports

    memory ratio = (peak RSS after loading − peak RSS after imports) / bytes of the loaded weights

The increase includes the tokenizer (~0.1 GB of Python objects). Baseline measured in the same
run: the time to read every shard's bytes from the page cache (`read_bytes`), against which the
load time is given as a ratio.

    python benchmarks/load.py [--keep DIR] [--tiktoken PATH]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from workbench.models.qwen_audio.official_layout import official_config, write_random_checkpoint

REPO = Path(__file__).resolve().parents[1]
TIKTOKEN = REPO.parent / "shared" / "fixtures" / "qwen_audio_v1_tiny" / "checkpoint" / "qwen.tiktoken"
SHARD_BYTES = 200 * 2**20
DTYPES = ("float16", "bfloat16", "float32")
GOAL = 1.15

# Smaller than the published model, with its real vocabulary, so that the benchmark runs on a
# CPU machine in minutes; gpu_full_size.py loads the published sizes.
CONFIG = official_config(hidden=1280, layers=20, heads=10, intermediate=2 * 3456,
                         audio_state=640, audio_layers=8, audio_heads=10)


def write_checkpoint(directory: Path, tiktoken: Path | None) -> int:
    """The benchmark checkpoint (float16, sharded, seeded); returns its tensor bytes."""
    write_random_checkpoint(directory, CONFIG, dtype=torch.float16, shard_bytes=SHARD_BYTES, tokenizer=tiktoken)
    return json.loads((directory / "model.safetensors.index.json").read_text())["metadata"]["total_size"]


def _status_bytes(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024  # reported in kB
    raise RuntimeError(f"/proc/self/status has no {field}: this benchmark needs Linux")


def child(directory: Path, dtype: str) -> None:
    """Runs in a fresh process: imports, baseline, load, report (one JSON line).

    Peak RSS is the kernel's high-water mark of this process (VmHWM), reset to the current RSS
    after the imports (`clear_refs` 5). `ru_maxrss` would not do: it carries the parent's peak
    across fork and exec.
    """
    from workbench.models.qwen_audio import load_qwen_audio

    Path("/proc/self/clear_refs").write_text("5")
    baseline = _status_bytes("VmRSS")
    start = time.perf_counter()
    model = load_qwen_audio(directory, dtype=dtype)
    seconds = time.perf_counter() - start
    peak = _status_bytes("VmHWM")
    assert all(t.dtype == getattr(torch, dtype) for t in model.network.parameters())
    weights = sum(t.numel() * t.element_size() for t in [*model.network.parameters(), *model.network.buffers()])
    print(json.dumps({"dtype": dtype, "baseline": baseline, "peak": peak, "weights": weights, "seconds": seconds}))


def read_seconds(directory: Path) -> float:
    start = time.perf_counter()
    for shard in sorted(directory.glob("*.safetensors")):
        shard.read_bytes()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keep", type=Path, help="write (or reuse) the checkpoint here instead of a temp dir")
    parser.add_argument("--tiktoken", type=Path, default=TIKTOKEN if TIKTOKEN.is_file() else None,
                        help="a Qwen-Audio qwen.tiktoken (default: the shared fixture's, else a synthetic one)")
    parser.add_argument("--child", nargs=2, metavar=("DIR", "DTYPE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(Path(args.child[0]), args.child[1])
    with tempfile.TemporaryDirectory() as scratch:
        directory = args.keep or Path(scratch)
        directory.mkdir(parents=True, exist_ok=True)
        if not (directory / "model.safetensors.index.json").exists():
            start = time.perf_counter()
            disk = write_checkpoint(directory, args.tiktoken)
            print(f"wrote {disk / 1e9:.2f} GB (float16, {len(list(directory.glob('*.safetensors')))} shards, "
                  f"{'tokenizer ' + str(args.tiktoken) if args.tiktoken else 'synthetic tokenizer'}) "
                  f"in {time.perf_counter() - start:.1f} s to {directory}")
        read_seconds(directory)  # warm the page cache, so both timings read from memory
        baseline_read = read_seconds(directory)
        print(f"baseline: reading every shard's bytes takes {baseline_read:.2f} s")
        print(f"{'dtype':>9} {'weights GB':>10} {'peak increase GB':>16} {'memory ratio':>12} {'load s':>7} {'÷ read':>7}")
        worst = 0.0
        for dtype in DTYPES:
            run = subprocess.run([sys.executable, __file__, "--child", str(directory), dtype],
                                 capture_output=True, text=True, cwd=REPO, check=True)
            result = json.loads(run.stdout.strip().splitlines()[-1])
            increase = result["peak"] - result["baseline"]
            ratio = increase / result["weights"]
            worst = max(worst, ratio)
            print(f"{dtype:>9} {result['weights'] / 1e9:>10.3f} {increase / 1e9:>16.3f} {ratio:>12.3f} "
                  f"{result['seconds']:>7.2f} {result['seconds'] / baseline_read:>7.1f}")
        print(f"worst memory ratio {worst:.3f} (goal ≤ {GOAL}): {'met' if worst <= GOAL else 'NOT met'}")


if __name__ == "__main__":
    main()
