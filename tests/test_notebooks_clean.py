"""The notebooks: stored clean, paired with their py:percent file, free of machinery, and they run;
the figures they keep are committed and come back the same.

Execution goes through `scripts/run_notebooks.py` (the same command `make figures` runs), once per
notebook, into a temporary folder; what each notebook saves with `save_notebook_figure` is compared
with `figures/<notebook>/`: the same names, and every PNG within FIGURE_RMS_TOLERANCE of the committed
one (matplotlib's image comparison). Not byte equality: float32 arithmetic differs in its last bits
between CPUs, which can move an antialiased edge or a colour bin. Those tests are marked slow (a
fresh kernel each, ~10 s for the quickstart on 2 cores).
"""
from __future__ import annotations

import ast
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import jupytext
import nbformat
import pytest
from matplotlib.testing.compare import compare_images

from workbench.figures import style

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
RUNNER = REPO / "scripts" / "run_notebooks.py"
FIGURES = REPO / "figures"
FIGURE_NAME = re.compile(r"[A-Za-z0-9_-]+\.(png|pdf)")
# RMS over all pixels and channels, on 0–255. Measured: two runs on one machine give 0.0; relative
# noise on a figure's data (what another CPU's float32 rounding does) moved a log-mel under spans by
# 0.01 at 1e-6, 0.04 at 1e-5, 0.33 at 1e-3, and a 20-bin histogram by 0.05 at 1e-5 (at 1e-4 a bin edge
# moved: 3.9, a different figure). So 1.0 passes rounding noise and fails a moved bar, point or label.
FIGURE_RMS_TOLERANCE = 1.0
REGENERATE = "run `make figures` (or `workbench figures NOTEBOOK`) and commit figures/"
ids = [p.stem for p in NOTEBOOKS]


def test_there_are_notebooks_and_each_has_its_pair():
    assert NOTEBOOKS, "notebooks/ holds no .ipynb"
    stems_py = {p.stem for p in (REPO / "notebooks").glob("*.py")}
    assert stems_py == {p.stem for p in NOTEBOOKS}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids)
def test_stored_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    for index, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [], f"cell {index} has outputs: clear them (jupytext --sync keeps them out)"
            assert cell.execution_count is None, f"cell {index} has an execution count"
    assert nb.metadata.kernelspec.name == "python3"
    assert nb.metadata.jupytext.formats == "ipynb,py:percent"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids)
def test_paired_py_is_in_sync(path):
    stored = nbformat.read(path, as_version=4)
    paired = jupytext.read(path.with_suffix(".py"))
    assert [(c.cell_type, c.source) for c in paired.cells] == [(c.cell_type, c.source) for c in stored.cells], (
        f"{path.name} and {path.with_suffix('.py').name} differ: run jupytext --sync {path.with_suffix('.py')}")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids)
def test_notebook_defines_no_machinery(path):
    """Notebooks call the workbench; functions and classes belong in workbench/."""
    for index, cell in enumerate(nbformat.read(path, as_version=4).cells):
        if cell.cell_type != "code":
            continue
        code = "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in cell.source.splitlines())
        defined = [node for node in ast.walk(ast.parse(code))
                   if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
        assert not defined, f"cell {index} defines {[d.name for d in defined]}: move it into workbench/"


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(RUNNER), *args], capture_output=True, text=True, cwd=REPO)


def figure_files(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()} if folder.is_dir() else set()


def test_committed_figures_belong_to_notebooks_and_come_in_pairs():
    """figures/ holds one folder per notebook, each figure as .png and .pdf with a name, not a cell number."""
    stems = {p.stem for p in NOTEBOOKS}
    assert FIGURES.is_dir(), f"there is no figures/: {REGENERATE}"
    loose = sorted(p.name for p in FIGURES.iterdir() if p.is_file())
    assert not loose, f"figures/ holds loose files {loose[:5]}: figures live in figures/<notebook>/; git rm them"
    for folder in sorted(p for p in FIGURES.iterdir() if p.is_dir()):
        assert folder.name in stems, f"figures/{folder.name}/ belongs to no notebook: git rm it"
        names = figure_files(folder)
        bad = sorted(n for n in names if not FIGURE_NAME.fullmatch(n) or re.search(r"cell\d", n))
        assert not bad, f"figures/{folder.name}: {bad} are not figure names (letters, digits, _ and -; .png/.pdf)"
        unpaired = {n[:-4] for n in names if n.endswith(".png")} ^ {n[:-4] for n in names if n.endswith(".pdf")}
        assert not unpaired, f"figures/{folder.name}: {sorted(unpaired)} lack their .png or .pdf: {REGENERATE}"


def test_runner_sets_the_variables_the_save_helper_reads():
    """The runner names them itself (importing workbench would load torch in every run): they must agree."""
    source = RUNNER.read_text()
    assert f'FIGURES_DIR_ENV = "{style.FIGURES_DIR_ENV}"' in source
    assert f'NOTEBOOK_ENV = "{style.NOTEBOOK_ENV}"' in source


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids)
def test_notebook_executes_and_regenerates_its_committed_figures(path, tmp_path_factory):
    figures_dir = tmp_path_factory.mktemp(f"figures_{path.stem}")
    stale = figures_dir / path.stem / "stale_figure.png"
    stale.parent.mkdir()
    stale.write_bytes(b"stale")                       # must be removed by the run
    stored = path.read_bytes()
    result = run(path.stem, "--figures-dir", str(figures_dir))
    assert result.returncode == 0, result.stderr[-5000:]
    assert path.read_bytes() == stored, "the runner must never write outputs into the stored notebook"
    assert not stale.exists(), "the runner must empty the notebook's figure folder first"
    assert {p.name for p in figures_dir.iterdir()} <= {path.stem}, "a notebook writes only into its own folder"

    made, kept = figures_dir / path.stem, FIGURES / path.stem
    new, gone = sorted(figure_files(made) - figure_files(kept)), sorted(figure_files(kept) - figure_files(made))
    assert not new, f"{path.stem} saves figures that are not committed: {new}: {REGENERATE}"
    assert not gone, f"figures/{path.stem}/ holds figures the notebook no longer saves: {gone}: {REGENERATE}"
    differ = []
    for png in sorted(made.glob("*.png")):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert png.with_suffix(".pdf").read_bytes()[:5] == b"%PDF-"
        try:
            failed = compare_images(str(kept / png.name), str(png), tol=FIGURE_RMS_TOLERANCE)
        except Exception as error:                    # ImageComparisonFailure: the sizes differ
            failed = str(error)
        if failed:
            differ.append(f"{png.name}: {failed}")
    assert not differ, (f"{path.stem}'s figures differ from figures/{path.stem}/ by more than RMS "
                        f"{FIGURE_RMS_TOLERANCE}:\n" + "\n".join(differ) + f"\n{REGENERATE}")


@pytest.mark.slow
def test_a_failing_cell_fails_loudly_and_leaves_no_figures(tmp_path):
    save = ("from matplotlib.figure import Figure\n"
            "from workbench.figures.style import save_notebook_figure\n"
            "save_notebook_figure(Figure(), 'written_before_the_error')")
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(save), nbformat.v4.new_code_cell("x = 1\nx / 0")])
    nb.metadata.kernelspec = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = tmp_path / "broken.ipynb"
    nbformat.write(nb, path)
    figures_dir = tmp_path / "figures"
    (figures_dir / "broken").mkdir(parents=True)
    (figures_dir / "broken" / "old.png").write_bytes(b"stale")
    result = run(str(path), "--figures-dir", str(figures_dir))
    assert result.returncode == 1
    assert "broken.ipynb failed at cell 1" in result.stderr and "x / 0" in result.stderr
    assert "ZeroDivisionError" in result.stderr and "\x1b[" not in result.stderr
    assert list(figures_dir.iterdir()) == []        # stale figures gone, the half set written removed


def test_notebook_names_resolve_and_unknown_names_list_the_notebooks(monkeypatch):
    spec = importlib.util.spec_from_file_location("run_notebooks", RUNNER)
    runner = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "run_notebooks", runner)   # dataclasses look their module up
    spec.loader.exec_module(runner)
    assert runner.find_notebooks([]) == NOTEBOOKS
    first = NOTEBOOKS[0]
    assert runner.find_notebooks([first.stem, first.name, f"notebooks/{first.name}"]) == [first] * 3
    with pytest.raises(SystemExit, match=f"no notebook 'no_such_notebook'.*{first.stem}"):
        runner.find_notebooks(["no_such_notebook"])
