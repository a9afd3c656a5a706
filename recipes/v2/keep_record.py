"""Keep a v2 run's measurements in the repository (not its weights): each stage's eval.json, the
stage table, and the training log thinned to every Nth step plus every validation record.

    python recipes/v2/keep_record.py --root runs/v2 --name run1_paper_stages

Why: a run that misses the gates is not shipped (`workbench.load("nano-v2")` refuses), but what it
measured is the evidence for the recipe's next step; notebook 06 draws these records, so the story of
each stage is told from real training runs on any machine, without the 6 GB feature cache.
"""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

RECORDS = Path(__file__).resolve().parent / "runs"


def thinned_log(log: Path, every: int) -> list[dict]:
    """Every `every`-th step of each stage, its last step, and every record with a validation loss;
    a resumed stage's repeated steps keep their later record (as plot_training_curves does)."""
    records = {(r["stage"], r["step"]): r for r in map(json.loads, log.read_text().splitlines())}
    last = {}
    for stage, step in records:
        last[stage] = max(step, last.get(stage, 0))
    return [r for (stage, step), r in records.items()
            if step % every == 0 or step == last[stage] or "validation_loss" in r]


def keep(root: Path, name: str, every: int = 10, note: str = "") -> Path:
    work, out = root / "work", RECORDS / name
    log = work / "train_log.jsonl"
    if not log.is_file():
        raise SystemExit(f"{log} not found: is {root} a v2 run (recipes/v2/run_v2.py --root {root})?")
    evaluated = sorted(work.glob("ckpt-*/eval.json"))
    if not evaluated:
        raise SystemExit(f"no ckpt-*/eval.json under {work}: run recipes/v2/eval_nano_v2.py on the stages first")
    out.mkdir(parents=True, exist_ok=True)
    for file in evaluated:
        shutil.copyfile(file, out / f"eval-{file.parent.name.removeprefix('ckpt-')}.json")
    if (root / "STAGES.md").is_file():
        shutil.copyfile(root / "STAGES.md", out / "STAGES.md")
    with open(out / "train_log.jsonl", "w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(r) + "\n" for r in thinned_log(log, every))
    if note:
        (out / "NOTE.md").write_text(note.strip() + "\n")
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, required=True, help="the run's --root (corpus/, work/)")
    parser.add_argument("--name", required=True, help="folder under recipes/v2/runs/")
    parser.add_argument("--every", type=int, default=10, help="keep every Nth training step")
    parser.add_argument("--note", default="", help="what was run (the command, what differed)")
    args = parser.parse_args(argv)
    print(keep(args.root, args.name, args.every, args.note))


if __name__ == "__main__":
    main()
