"""Run a model on every benchmark's tiny replica and print the scores as a markdown table.

    python scripts/evaluate_replicas.py --model nano --out /tmp/replicas [--real-clips ../shared/audio]

The numbers in the README's evaluation section come from this script on the embedded default.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import workbench as wb
from workbench.evaluation.suite import evaluate_replicas


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="nano", help="packaged name or checkpoint directory (default: nano)")
    parser.add_argument("--out", type=Path, required=True, help="folder for the replicas and the runs")
    parser.add_argument("--real-clips", type=Path, default=None, help="a folder like ../shared/audio")
    args = parser.parse_args()
    table = evaluate_replicas(wb.load(args.model), args.out, real_clips=args.real_clips, progress=True)
    shown = table[["replica", "benchmark", "items", "metric", "recipe", "value", "Qwen-Audio (paper)"]]
    print(shown.to_markdown(index=False, floatfmt=".3g"))


if __name__ == "__main__":
    main()
