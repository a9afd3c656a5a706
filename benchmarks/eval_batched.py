"""The batched evaluation runner against a one-item-at-a-time loop, on the nano model (goal ≥ 3×).

Items: the nano model's held-out test clips shipped with it (`workbench/assets/nano/eval_clips`:
24 clips over ASR, S2TT, AAC, ASC, SER, AQA, VSC, MNA and SRWT), each with its official tag prompt
from the manifest. In the same process, alternating over `--repeats`:

(a) baseline — the plain evaluation loop: for each item, `model.generate(prompt, audio)` (decoding,
    log-mel, encoder, prefill and greedy decoding of that item alone);
(b) `evaluate(...)` with `--batch-size` into a fresh folder, the batch check off: everything the
    runner does is inside the timed region (audio hashing, keys, prompt-length sorting, batched
    generation, JSONL records, scoring, summary.json);
(c) the same with the default batch check (the first batch re-run one item at a time), for context:
    its cost is one batch per run, which matters on 24 items and not on a benchmark's thousands.

Asserts that (a), (b) and (c) give the same 24 outputs. Reports items/s and the ratio (b) ÷ (a)
per repeat (the two sides ran back to back, under the same load), and the median over repeats.

    python benchmarks/eval_batched.py [--batch-size 8] [--repeats 3] [--threads N]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

import workbench as wb
from workbench.evaluation.items import Item, Metric
from workbench.evaluation.runner import evaluate
from workbench.tags import TagPrompt

CLIPS = Path(wb.__file__).resolve().parent / "assets" / "nano" / "eval_clips"
GOAL = 3.0
MAX_NEW_TOKENS = 64     # the longest reference (word timestamps) is 26 tokens


@dataclass(frozen=True)
class ClipTask:
    """The manifest's own prompts; exact match as the score (the number is not the point here)."""

    name: str = "nano-eval-clips"
    kind: str = "mixed"
    dataset: str = "nano-eval-clips"
    reader_kwargs: dict = field(default_factory=dict)
    max_new_tokens: int = MAX_NEW_TOKENS
    paper: dict = field(default_factory=dict)
    previous_best: dict = field(default_factory=dict)

    def prompt(self, item: Item) -> TagPrompt:
        return TagPrompt.parse(item.meta["prompt"])

    def whisper_prompt(self, item: Item) -> None:
        return None

    def score_item(self, output: str, item: Item) -> dict:
        return {"correct": output == item.reference}

    def score(self, outputs: list[str], items: list[Item]) -> list[Metric]:
        return [Metric("exact", sum(o == i.reference for o, i in zip(outputs, items)) / len(items), "official", True)]


def clip_items() -> list[Item]:
    rows = [json.loads(line) for line in (CLIPS / "manifest.jsonl").read_text().splitlines()]
    return [Item(id=r["id"], audio=CLIPS / r["audio"], reference=r["reference"], meta={"prompt": r["prompt"]})
            for r in rows]


def loop(model, task, items) -> list[str]:
    return [model.generate(task.prompt(item), item.audio, max_new_tokens=MAX_NEW_TOKENS).text.strip()
            for item in items]


def runner(model, task, items, batch_size: int, check: bool) -> list[str]:
    with tempfile.TemporaryDirectory() as out:
        return evaluate(model, task, items, out, batch_size=batch_size, progress=False, check_batch=check).outputs


def timed(run):
    start = time.perf_counter()
    value = run()
    return time.perf_counter() - start, value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model = wb.load("nano")
    task, items = ClipTask(), clip_items()
    print(f"nano ({model.describe()['total'] / 1e6:.1f} M parameters, float32), {len(items)} clips, "
          f"batch size {args.batch_size}, {torch.get_num_threads()} torch threads")
    expected = loop(model, task, items)    # warm-up (first calls allocate), and the reference outputs
    times: dict[str, list[float]] = {"loop": [], "runner": [], "runner+check": []}
    for _ in range(args.repeats):
        seconds, outputs = timed(lambda: loop(model, task, items))
        times["loop"].append(seconds)
        assert outputs == expected, "the one-at-a-time loop is not deterministic"
        seconds, outputs = timed(lambda: runner(model, task, items, args.batch_size, check=False))
        times["runner"].append(seconds)
        if outputs != expected:
            differ = [(i.id, a, b) for i, a, b in zip(items, outputs, expected) if a != b]
            sys.exit(f"batched outputs differ from one-at-a-time: {differ}")
        seconds, outputs = timed(lambda: runner(model, task, items, args.batch_size, check=True))
        times["runner+check"].append(seconds)
        assert outputs == expected
    print("outputs identical (24 of 24): loop, runner, runner with batch check")
    print(f"{'':>14} {'best s':>8} {'median s':>9} {'items/s (median)':>17}")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:>14} {min(values):>8.2f} {median:>9.2f} {len(items) / median:>17.1f}")
    ratio = statistics.median(a / b for a, b in zip(times["loop"], times["runner"]))
    checked = statistics.median(a / b for a, b in zip(times["loop"], times["runner+check"]))
    met = "met" if ratio >= GOAL else "NOT met"
    print(f"runner ÷ loop, items/s (median of {args.repeats} paired repeats): {ratio:.2f}× "
          f"(goal ≥ {GOAL}×: {met}); with the batch check: {checked:.2f}×")


if __name__ == "__main__":
    main()
