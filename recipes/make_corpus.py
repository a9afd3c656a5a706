"""Generate the synthetic multitask corpus the nano Qwen-Audio is trained on.

    python recipes/make_corpus.py --out corpus --seed 0 --per-task 600 --per-task-for mna=5000 asr=2000 --workers 2

Writes train/validation/test manifests (JSON lines) and 16 kHz FLAC audio under --out; see
workbench/synth/corpus.py for the layout and fields. Needs espeak-ng, fluidsynth and
fluid-soundfont-gm (apt).
"""
from __future__ import annotations

import argparse
import os

from workbench.synth import TASKS, CorpusOptions, generate_corpus


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="output folder (created)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--per-task", type=int, default=2000, help="items per task, all splits together")
    parser.add_argument("--per-task-for", nargs="*", default=[], metavar="TASK=N",
                        help="items for these tasks instead of --per-task, e.g. mna=5000 asr=2000")
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    parser.add_argument("--eval-fraction", type=float, default=0.1,
                        help="share of each task's items in validation, and again in test")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args(argv)
    overrides = []
    for spec in args.per_task_for:
        task, _, count = spec.partition("=")
        if not count.isdigit():
            parser.error(f"--per-task-for {spec!r}: write TASK=N, e.g. mna=5000")
        overrides.append((task, int(count)))
    options = CorpusOptions(per_task=args.per_task, seed=args.seed, tasks=tuple(args.tasks),
                            per_task_for=tuple(overrides),
                            eval_fraction=args.eval_fraction, workers=args.workers)
    summary = generate_corpus(args.out, options)
    for split, counts in summary.items.items():
        print(f"{split:>10}: {sum(counts.values()):6d} items  " + "  ".join(f"{t} {n}" for t, n in counts.items()))
    print(f"{summary.audio_seconds / 3600:.2f} h of audio, {summary.bytes / 2 ** 20:.0f} MiB, "
          f"{summary.wall_seconds:.0f} s ({summary.items_per_second:.1f} items/s) → {summary.out_dir}")


if __name__ == "__main__":
    main()
