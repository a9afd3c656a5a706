"""Execute the notebooks headless and write their figures to `figures/`.

    python scripts/run_notebooks.py                    # every notebooks/*.ipynb
    python scripts/run_notebooks.py 00_quickstart      # by name (stem, file name or path)
    python scripts/run_notebooks.py path/to/other.ipynb
    python scripts/run_notebooks.py --figures-dir /tmp/figs

Each notebook runs top to bottom in a fresh `python3` kernel with notebooks/ as its working
directory and a fixed environment, in memory: the stored .ipynb is never written (it stays
without outputs). Every image/png output becomes `{figures}/{notebook}_cell{NN}.png`, or
`..._cell{NN}_{k}.png` when a cell shows several (NN: the cell's index in the notebook, k from 1);
the notebook's old figures are removed first, so a figure that disappeared does not linger.
A failing cell stops everything: the script names the notebook and cell, prints the cell and the
traceback, writes no figures for that notebook and exits with status 1.

Same code, same versions → the same PNG bytes: matplotlib's Agg output carries no date, the
style fixes fonts and dpi, and the kernel gets a fixed hash seed.
"""
from __future__ import annotations

import argparse
import base64
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import nbformat
from nbclient import NotebookClient

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"
KERNEL = "python3"
CELL_TIMEOUT_S = 1800          # generous: a cell may load a model or run a sweep on 2 CPU cores
FIXED_ENV = {
    "MPLBACKEND": "module://matplotlib_inline.backend_inline",
    "PYTHONHASHSEED": "0",
    "SOURCE_DATE_EPOCH": "0",   # any SVG/PDF a notebook saves gets a fixed date
    "HF_HUB_OFFLINE": "1",      # nothing may download weights at run time
    "TRANSFORMERS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
}


class NotebookFailed(RuntimeError):
    def __init__(self, notebook: Path, cell_index: int | None, source: str, detail: str):
        self.notebook, self.cell_index, self.source, self.detail = notebook, cell_index, source, detail
        where = f"cell {cell_index}" if cell_index is not None else "kernel start-up"
        super().__init__(f"{notebook.name} failed at {where}")


@dataclass(frozen=True)
class FigureFile:
    name: str       # file name, e.g. 00_quickstart_cell05.png
    png: bytes


def find_notebooks(names: list[str]) -> list[Path]:
    """Every notebooks/*.ipynb, or the ones named: by stem or file name in notebooks/, or any
    path to an .ipynb (which then runs in its own folder)."""
    available = {p.stem: p for p in sorted(NOTEBOOKS.glob("*.ipynb"))}
    if not names:
        return list(available.values())
    found = []
    for name in names:
        path = Path(name)
        if path.suffix == ".ipynb" and path.is_file():
            found.append(path.resolve())
        elif path.stem in available:
            found.append(available[path.stem])
        else:
            raise SystemExit(f"no notebook {name!r} in {NOTEBOOKS} (and no such .ipynb file); "
                             f"the notebooks are: {', '.join(available) or '(none)'}")
    return found


def execute(path: Path) -> nbformat.NotebookNode:
    """Run the notebook in a fresh kernel and return it with its outputs (the file is untouched)."""
    nb = nbformat.read(path, as_version=4)
    started: list[int] = []
    client = NotebookClient(
        nb, kernel_name=KERNEL, timeout=CELL_TIMEOUT_S, allow_errors=False,
        resources={"metadata": {"path": str(path.parent)}},      # the kernel's working directory
        on_cell_start=lambda cell, cell_index: started.append(cell_index),
    )
    try:
        client.execute(env={**os.environ, **FIXED_ENV})
    except Exception as error:   # CellExecutionError, CellTimeoutError, DeadKernelError, ...
        index = started[-1] if started else None
        source = nb.cells[index].source if index is not None else ""
        detail = str(error) if index is None else _error_text(nb.cells[index]) or str(error)
        raise NotebookFailed(path, index, source, detail) from error
    return nb


def _error_text(cell: nbformat.NotebookNode) -> str:
    for output in cell.get("outputs", []):
        if output.output_type == "error":   # IPython colours tracebacks; logs want plain text
            return ANSI_COLOUR.sub("", "\n".join(output.traceback))
    return ""


ANSI_COLOUR = re.compile(r"\x1b\[[0-9;]*m")


def figures(nb: nbformat.NotebookNode, stem: str) -> list[FigureFile]:
    """The PNG outputs of every cell, named after the notebook and the cell's index."""
    found = []
    for index, cell in enumerate(nb.cells):
        pngs = [base64.b64decode(out.data["image/png"]) for out in cell.get("outputs", [])
                if "image/png" in out.get("data", {})]
        for k, png in enumerate(pngs, start=1):
            suffix = f"_{k}" if len(pngs) > 1 else ""
            found.append(FigureFile(f"{stem}_cell{index:02d}{suffix}.png", png))
    return found


def remove_figures(stem: str, figures_dir: Path) -> None:
    for old in figures_dir.glob(f"{stem}_cell*.png"):
        old.unlink()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="notebooks to run (default: all in notebooks/)")
    parser.add_argument("--figures-dir", type=Path, default=REPO / "figures",
                        help="where the PNGs go (default: figures/ in the repository)")
    args = parser.parse_args(argv)
    args.figures_dir.mkdir(parents=True, exist_ok=True)

    for path in find_notebooks(args.names):
        remove_figures(path.stem, args.figures_dir)
        start = time.perf_counter()
        try:
            nb = execute(path)
        except NotebookFailed as failed:
            print(f"\nFAILED: {failed}\n--- cell {failed.cell_index} ---\n{failed.source}\n"
                  f"--- error ---\n{failed.detail}", file=sys.stderr)
            return 1
        written = figures(nb, path.stem)
        for figure in written:
            (args.figures_dir / figure.name).write_bytes(figure.png)
        print(f"{path.name}: {time.perf_counter() - start:.1f} s, {len(written)} figures → {args.figures_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
