"""`workbench` console script: the main job, figures, and a look at a model from the shell."""
from __future__ import annotations

import argparse
import json
import runpy
import sys
from pathlib import Path

# The main job runs these notebooks headless (the tour, then the embedded nano model at work);
# `figures` runs them all.
DEMO_NOTEBOOKS = ("00_quickstart", "04_nano_recipe")


def _repo_root() -> Path:
    root = Path.cwd()
    if not (root / "notebooks").is_dir():
        sys.exit("workbench: run this from the repository root (the folder with notebooks/)")
    return root


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="workbench", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("demo", help="the main job: run the demo notebooks headless, write figures/")
    figures = sub.add_parser("figures", help="execute every notebook headless; each writes figures/<notebook>/NAME.png and .pdf")
    figures.add_argument("notebooks", nargs="*", help="notebook stems (default: all)")
    describe = sub.add_parser("describe", help="load a model and print its parts")
    describe.add_argument("source", help="packaged name or checkpoint directory")
    generate = sub.add_parser("generate", help="greedy generation for one prompt")
    generate.add_argument("source")
    generate.add_argument("prompt", help="e.g. '<audio>clip.flac</audio><|startoftranscript|>…'")
    generate.add_argument("--audio-dir", default=None)
    generate.add_argument("--max-new-tokens", type=int, default=64)
    _add_eval_parser(sub)
    args = parser.parse_args(argv)
    if args.command == "eval":
        return _eval(args)

    if args.command in ("demo", "figures"):
        # The runner lives beside the notebooks (scripts/), not in the installed package.
        root = _repo_root()
        names = list(DEMO_NOTEBOOKS) if args.command == "demo" else args.notebooks
        runner = runpy.run_path(str(root / "scripts" / "run_notebooks.py"))
        return runner["main"](names)

    import workbench
    model = workbench.load(args.source)
    if args.command == "describe":
        print(json.dumps(model.describe(), indent=2))
        return 0
    out = model.generate(args.prompt, audio_dir=args.audio_dir, max_new_tokens=args.max_new_tokens)
    print(out.text)
    return 0


def _add_eval_parser(sub: argparse._SubParsersAction) -> None:
    evaluate = sub.add_parser(
        "eval", help="evaluate a model on a benchmark (resumable; shards itself under torchrun)",
        description="Batched greedy evaluation with resumable records (out/records.jsonl) and out/summary.json; "
                    "prints the metrics against the paper. Under `torchrun --nproc-per-node N -m workbench.cli "
                    "eval …` the items are split over the N processes (workbench/evaluation/sharding.py).")
    evaluate.add_argument("task", help="a workbench.evaluation.tasks.TASKS name, e.g. librispeech-test-clean")
    evaluate.add_argument("--data", required=True, help="the dataset's folder, as distributed")
    evaluate.add_argument("--model", required=True, help="packaged name (nano, whisper-base…) or a checkpoint folder")
    evaluate.add_argument("--out", required=True, help="run folder: records.jsonl, summary.json (rerun to resume)")
    evaluate.add_argument("--limit", type=int, default=None, help="only the first N items")
    evaluate.add_argument("--batch-size", type=int, default=8)
    evaluate.add_argument("--max-new-tokens", type=int, default=None, help="default: the task's (the official value)")
    evaluate.add_argument("--no-check-batch", dest="check_batch", action="store_false",
                          help="skip re-running the first batch one item at a time")
    evaluate.add_argument("--quiet", action="store_true", help="no progress bar")


def _eval(args: argparse.Namespace) -> int:
    import workbench
    from workbench.evaluation import sharding
    from workbench.evaluation.runner import BatchMismatchError, UnsupportedTaskError, evaluate
    from workbench.evaluation.tasks import get_task

    shard = sharding.setup()   # before loading: each rank loads onto its own GPU
    try:
        task = get_task(args.task)
        if not Path(args.data).expanduser().exists():   # before a load that can take minutes
            raise FileNotFoundError(f"--data {args.data} does not exist: pass the {task.dataset} folder as distributed")
        model = workbench.load(args.model, device=shard.device())
        result = evaluate(model, task, args.data, args.out, limit=args.limit, batch_size=args.batch_size,
                          max_new_tokens=args.max_new_tokens, progress=not args.quiet, check_batch=args.check_batch)
    except (KeyError, FileNotFoundError, UnsupportedTaskError, BatchMismatchError) as error:
        # What the user can fix (a task name, a path, a model that cannot do the task): the message, no traceback.
        print(f"workbench eval: {error.args[0] if isinstance(error, KeyError) else error}", file=sys.stderr)
        return 1
    finally:
        sharding.teardown()
    if shard.is_main:
        print(result.to_markdown())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
