"""Execute the notebooks headless; each one writes its figures into `figures/<notebook>/`.

    python scripts/run_notebooks.py                    # every notebooks/*.ipynb
    python scripts/run_notebooks.py 00_quickstart      # by name (stem, file name or path)
    python scripts/run_notebooks.py path/to/other.ipynb
    python scripts/run_notebooks.py --figures-dir /tmp/figs

Each notebook runs top to bottom in a fresh `python3` kernel with notebooks/ as its working
directory and a fixed environment, in memory: the stored .ipynb is never written (it stays
without outputs). The notebook saves what it means to keep itself, by name:
`save_notebook_figure(fig, "wer_by_length")` writes `{figures}/{notebook}/wer_by_length.png` and
`.pdf` when the kernel's environment names the notebook and the folder (`WORKBENCH_NOTEBOOK`,
`WORKBENCH_FIGURES_DIR`, set here); inline outputs are not saved, so a figure's file name never
depends on the cell it is drawn in. The notebook's old folder is removed first, so a figure that
disappeared does not linger. A failing cell stops everything: the script names the notebook and
cell, prints the cell and the traceback, removes the figures that notebook had written so far
(a half set must not be committed) and exits with status 1.

Same code, same versions, same CPU → the same PNGs: matplotlib's Agg output carries no date, the
style fixes fonts and dpi, and the kernel gets a fixed hash seed. Across CPUs float32 arithmetic
may differ in the last bits, so tests compare figures by pixel RMS, not bytes.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import time
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
# workbench.figures.style's FIGURES_DIR_ENV and NOTEBOOK_ENV (a test keeps them equal): importing the
# package here would load torch, seconds for each run of this script, for two strings.
FIGURES_DIR_ENV = "WORKBENCH_FIGURES_DIR"
NOTEBOOK_ENV = "WORKBENCH_NOTEBOOK"


class NotebookFailed(RuntimeError):
    def __init__(self, notebook: Path, cell_index: int | None, source: str, detail: str):
        self.notebook, self.cell_index, self.source, self.detail = notebook, cell_index, source, detail
        where = f"cell {cell_index}" if cell_index is not None else "kernel start-up"
        super().__init__(f"{notebook.name} failed at {where}")


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


def execute(path: Path, figures_dir: Path | None = None) -> nbformat.NotebookNode:
    """Run the notebook in a fresh kernel and return it with its outputs (the file is untouched);
    with `figures_dir`, its `save_notebook_figure` calls write into `figures_dir/<stem>/`."""
    nb = nbformat.read(path, as_version=4)
    started: list[int] = []
    client = NotebookClient(
        nb, kernel_name=KERNEL, timeout=CELL_TIMEOUT_S, allow_errors=False,
        resources={"metadata": {"path": str(path.parent)}},      # the kernel's working directory
        on_cell_start=lambda cell, cell_index: started.append(cell_index),
    )
    try:
        client.execute(env={**os.environ, **FIXED_ENV, **figure_env(path.stem, figures_dir)})
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


def figure_env(stem: str, figures_dir: Path | None) -> dict[str, str]:
    """What tells `workbench.figures.style.save_notebook_figure` in the kernel where to write."""
    if figures_dir is None:
        return {}
    # Absolute: the kernel runs in the notebook's folder, not here.
    return {NOTEBOOK_ENV: stem, FIGURES_DIR_ENV: str(figures_dir.resolve())}


def remove_figures(stem: str, figures_dir: Path) -> None:
    shutil.rmtree(figures_dir / stem, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="notebooks to run (default: all in notebooks/)")
    parser.add_argument("--figures-dir", type=Path, default=REPO / "figures",
                        help="where each notebook's folder of figures goes (default: figures/ in the repository)")
    args = parser.parse_args(argv)
    args.figures_dir.mkdir(parents=True, exist_ok=True)

    for path in find_notebooks(args.names):
        remove_figures(path.stem, args.figures_dir)
        start = time.perf_counter()
        try:
            execute(path, args.figures_dir)
        except NotebookFailed as failed:
            remove_figures(path.stem, args.figures_dir)
            print(f"\nFAILED: {failed}\n--- cell {failed.cell_index} ---\n{failed.source}\n"
                  f"--- error ---\n{failed.detail}", file=sys.stderr)
            return 1
        written = sorted((args.figures_dir / path.stem).glob("*.png"))
        print(f"{path.name}: {time.perf_counter() - start:.1f} s, {len(written)} figures → "
              f"{args.figures_dir / path.stem if written else '(none)'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
