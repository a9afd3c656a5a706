"""Nano's held-out split through the evaluation runner, compared with workbench/assets/nano/eval.json.

    python scripts/evaluate_nano_heldout.py --out /tmp/heldout [--per-task N] [--tasks asr mna] [--table T.md]

For every corpus task, the test items recipes/eval_nano.py scored (all of them by default; the first
N with --per-task) are rebuilt and run through `wb.evaluate` (workbench.evaluation.heldout). The
runner's outputs are then scored twice: with eval_nano.py's own scorer (its helpers imported from
recipes/eval_nano.py) — which must give eval.json's numbers when every item is run — and with the
registered benchmark's recipes, the runner's metric. Prints a markdown table (and writes it to
--table): per task and metric, eval.json, the recipe scorer on the runner's outputs, whether they
are equal, the items, and the runner's primary metric per prompt group.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import sacrebleu
import torch

import workbench as wb
from workbench.evaluation.heldout import REGISTERED, SPLIT_SIZES, TASKS, HeldOutRun, evaluate_heldout
from workbench.evaluation.tasks import get_task
from workbench.models.qwen_audio.nano import NANO_DIR

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "recipes"))
import eval_nano  # noqa: E402  (recipes/ is not a package: the recipe's own scorer, not a copy)

EVAL_JSON = NANO_DIR / "eval.json"


def recipe_metrics(task: str, rows: Sequence[dict[str, Any]], outputs: Sequence[str]) -> dict[str, float]:
    """The aggregates eval_nano.evaluate() computes for `task`, on these rows and outputs (the
    train-set dependent ones, chance levels and the target-language share, left out)."""
    refs = [r["reference"] for r in rows]
    plain = eval_nano.plain
    if task == "asr":
        scores = {}
        for lang in sorted({r["language"] for r in rows}):
            pairs = [(r["reference"], o) for r, o in zip(rows, outputs) if r["language"] == lang]
            scores[f"cer_{lang}"] = eval_nano.cer(*zip(*pairs), chars=lang == "zh")
        return scores
    if task == "s2tt":
        return {"bleu": sacrebleu.corpus_bleu(list(outputs), [refs]).score}
    if task in eval_nano.LABEL_TASKS:
        return {"accuracy": float(np.mean([plain(o) == ref for o, ref in zip(outputs, refs)]))}
    if task == "mna":
        parsed = [eval_nano._NOTE.match(o) for o in outputs]
        pitch = [int(m.group(1)) if m else -100 for m in parsed]
        return {"pitch_within_1": float(np.mean([abs(p - r["pitch"]) <= 1 for p, r in zip(pitch, rows)])),
                "pitch_exact": float(np.mean([p == r["pitch"] for p, r in zip(pitch, rows)])),
                "instrument_accuracy": float(np.mean([bool(m) and m.group(3).strip() == r["instrument"]
                                                      for m, r in zip(parsed, rows)])),
                "velocity_accuracy": float(np.mean([bool(m) and int(m.group(2)) == r["velocity"]
                                                    for m, r in zip(parsed, rows)]))}
    if task == "srwt":
        times = [[float(t[2:-2]) for t in eval_nano._TIME.findall(o)] for o in outputs]
        return {"cer": eval_nano.cer(refs, list(outputs), chars=True),
                "timestamps_non_decreasing": float(np.mean([len(t) >= 2 and all(a <= b for a, b in zip(t, t[1:]))
                                                            for t in times]))}
    if task == "aac":
        return {"exact_match": float(np.mean([plain(o) == plain(ref) for o, ref in zip(outputs, refs)])),
                "bleu": sacrebleu.corpus_bleu([plain(o) for o in outputs], [[plain(r) for r in refs]]).score}
    raise ValueError(f"no recipe metrics for task {task!r}")


def runner_primary(run: HeldOutRun) -> str:
    """Each prompt group's primary metric (official recipe), e.g. 'covost2-en-de BLEU 4.1 (12)'."""
    parts = []
    primary = get_task(REGISTERED[run.task]).primary_metric
    for result in run.results:
        task = result.summary["task"]
        metric = result.metric(primary, "official")
        value = "n/a" if metric.value is None else f"{metric.value:.4g}"
        parts.append(f"{task['name']} {metric.name} {value} ({len(result.records)})")
    return "; ".join(parts)


def comparison(runs: dict[str, HeldOutRun], reference: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per (task, eval.json metric)."""
    rows = []
    for task, run in runs.items():
        ours = recipe_metrics(task, [h.row for h in run.items], run.outputs)
        whole = len(run.items) == SPLIT_SIZES[task]
        for metric, value in ours.items():
            recorded = reference["tasks"][task][metric]
            rows.append({"task": task, "metric": metric, "items": len(run.items), "eval.json": recorded,
                         "runner + recipe scorer": value,
                         "equal": (math.isclose(value, recorded, rel_tol=1e-9, abs_tol=1e-12) if whole else "subset"),
                         "runner metric (official)": runner_primary(run)})
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    head = list(rows[0])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [f"{v:.4f}" if isinstance(v, float) else str(v) for v in row.values()]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="folder for the rebuilt audio and the runs (resumable)")
    parser.add_argument("--per-task", type=int, default=None, help="the first N test items of each task (default: all)")
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    parser.add_argument("--batch-size", type=int, default=16, help="eval_nano.py generated 16 at a time")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--table", type=Path, default=None, help="also write the markdown table here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    runs = evaluate_heldout(wb.load("nano"), args.out, tasks=tuple(args.tasks), per_task=args.per_task,
                            batch_size=args.batch_size, progress=True)
    rows = comparison(runs, json.loads(EVAL_JSON.read_text()))
    table = markdown(rows)
    print(table)
    if args.table is not None:
        args.table.write_text(table + "\n")
    (args.out / "comparison.json").write_text(json.dumps(rows, indent=1) + "\n")
    return 0 if all(r["equal"] in (True, "subset") for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
