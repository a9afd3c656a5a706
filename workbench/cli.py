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
    figures = sub.add_parser("figures", help="execute every notebook headless and write figures/")
    figures.add_argument("notebooks", nargs="*", help="notebook stems (default: all)")
    describe = sub.add_parser("describe", help="load a model and print its parts")
    describe.add_argument("source", help="packaged name or checkpoint directory")
    generate = sub.add_parser("generate", help="greedy generation for one prompt")
    generate.add_argument("source")
    generate.add_argument("prompt", help="e.g. '<audio>clip.flac</audio><|startoftranscript|>…'")
    generate.add_argument("--audio-dir", default=None)
    generate.add_argument("--max-new-tokens", type=int, default=64)
    args = parser.parse_args(argv)

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


if __name__ == "__main__":
    raise SystemExit(main())
