"""Nano v2 from nothing to a measured checkpoint, in one resumable command (issue #14):

    python recipes/v2/run_v2.py --root runs/v2                 # corpus → lm → stage1 → stage2 → eval
    python recipes/v2/run_v2.py --root runs/v2 --baseline      # + v1's joint regime, for the stage table

Every step resumes: rerun the same command after an interruption and finished work is skipped
(corpus jobs, cached encoder features, finished stages; a stage in progress continues from its last
saved state). Outputs: ROOT/corpus, ROOT/work (tokenizer, features, states, ckpt-*), ROOT/nano (the
final checkpoint), ROOT/STAGES.md (the gates of every stage side by side). Options after `--` go to
train_nano_v2.py, e.g. `-- --steps 1500 5000 1500 6500`.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import eval_nano_v2  # noqa: E402
import make_corpus_v2  # noqa: E402
import train_nano_v2  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--scale", type=float, default=1.0, help="corpus size relative to the full run")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--baseline", action="store_true", help="also train v1's joint regime for the table")
    parser.add_argument("--per-kind", type=int, default=40, help="test items per kind in the evaluation")
    args = parser.parse_args(argv[: argv.index("--")] if "--" in argv else argv)
    began = time.perf_counter()
    corpus, work = args.root / "corpus", args.root / "work"
    make_corpus_v2.main(["--out", str(corpus), "--scale", str(args.scale), "--workers", str(args.workers)])
    # Wall-time caps keep the whole recipe within 3 h on 2 cores (a capped stage ends its schedule early);
    # later options win, so `-- --minutes 0 0 0 0` lifts them.
    common = ["--corpus", str(corpus), "--work", str(work), "--workers", str(args.workers), "--threads", "2",
              "--minutes", "12", "60", "25", "75", *extra]
    train_nano_v2.main([*common, "--stage", "all", "--out", str(args.root / "nano")])
    models = [f"stage1={work / 'ckpt-stage1'}", f"stage2={work / 'ckpt-stage2'}"]
    if args.baseline:
        train_nano_v2.main([*common, "--stage", "joint"])
        models.append(f"v1-regime={work / 'ckpt-joint'}")
    eval_nano_v2.main(["--corpus", str(corpus), "--models", *models, "--per-kind", str(args.per_kind),
                       "--table", str(args.root / "STAGES.md")])
    print(f"nano v2 done in {(time.perf_counter() - began) / 60:.0f} min → {args.root / 'nano'}")


if __name__ == "__main__":
    main()
