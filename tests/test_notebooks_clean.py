"""The notebooks: stored clean, paired with their py:percent file, free of machinery, and they run.

Execution goes through `scripts/run_notebooks.py` (the same command that writes figures/), once
per notebook; the quickstart runs a second time to check its figures are byte-identical.
Those tests are marked slow (a fresh kernel each, ~10 s for the quickstart on 2 cores).
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

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
RUNNER = REPO / "scripts" / "run_notebooks.py"
FIGURE_NAME = re.compile(r"(?P<stem>.+)_cell\d{2}(_\d+)?\.png")
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


@pytest.fixture(scope="module")
def first_runs(tmp_path_factory) -> dict[str, Path]:
    """notebook stem -> the figures folder of its first run (filled by test_notebook_executes)."""
    return {}


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids)
def test_notebook_executes(path, tmp_path_factory, first_runs):
    figures_dir = tmp_path_factory.mktemp(f"figures_{path.stem}")
    stored = path.read_bytes()
    result = run(path.stem, "--figures-dir", str(figures_dir))
    assert result.returncode == 0, result.stderr[-5000:]
    assert path.read_bytes() == stored, "the runner must never write outputs into the stored notebook"
    for png in figures_dir.iterdir():
        assert FIGURE_NAME.fullmatch(png.name)["stem"] == path.stem
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    first_runs[path.stem] = figures_dir


@pytest.mark.slow
def test_quickstart_figures_are_byte_identical_across_runs(tmp_path_factory, first_runs):
    if "00_quickstart" not in first_runs:
        first = tmp_path_factory.mktemp("figures_first")
        assert run("00_quickstart", "--figures-dir", str(first)).returncode == 0
        first_runs["00_quickstart"] = first
    second = tmp_path_factory.mktemp("figures_second")
    (second / "00_quickstart_cell99.png").write_bytes(b"stale")      # must be removed by the run
    result = run("00_quickstart", "--figures-dir", str(second))
    assert result.returncode == 0, result.stderr[-5000:]
    first_pngs = {p.name: p.read_bytes() for p in first_runs["00_quickstart"].iterdir()}
    second_pngs = {p.name: p.read_bytes() for p in second.iterdir()}
    assert len(first_pngs) >= 4                      # waveform, padded mel, cropped mel, scale
    assert sorted(second_pngs) == sorted(first_pngs)
    changed = [name for name in first_pngs if first_pngs[name] != second_pngs[name]]
    assert not changed, f"figures differ between two runs: {changed}"


@pytest.mark.slow
def test_a_failing_cell_fails_loudly(tmp_path):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1"),
                                         nbformat.v4.new_code_cell("x / 0")])
    nb.metadata.kernelspec = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = tmp_path / "broken.ipynb"
    nbformat.write(nb, path)
    figures_dir = tmp_path / "figures"
    figures_dir.mkdir()
    (figures_dir / "broken_cell00.png").write_bytes(b"stale")
    result = run(str(path), "--figures-dir", str(figures_dir))
    assert result.returncode == 1
    assert "broken.ipynb failed at cell 1" in result.stderr and "x / 0" in result.stderr
    assert "ZeroDivisionError" in result.stderr and "\x1b[" not in result.stderr
    assert list(figures_dir.iterdir()) == []        # stale figures gone, none written


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
