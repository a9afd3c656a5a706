"""Every code block in README.md runs.

Python blocks are executed top to bottom in one namespace per block, as a reader would paste them
into a notebook. Paths that stand for weights a reader has and CI does not (`/models/Qwen-Audio`)
are replaced by the shared fixture in the same official layout, so the calls, their arguments and
their order are the README's own. Shell blocks name `make` targets and scripts: each target must
exist in the Makefile and each script must parse its arguments (`--help`), without running the
long jobs themselves (`make test` is this very suite).
"""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()

BLOCKS = [(m.group(1), m.group(2), README[: m.start()].count("\n") + 1)
          for m in re.finditer(r"```(\w+)\n(.*?)```", README, flags=re.S)]
PYTHON = [(code, line) for lang, code, line in BLOCKS if lang == "python"]
SHELL = [(code, line) for lang, code, line in BLOCKS if lang in ("bash", "sh", "shell")]
LAUNCHERS = ("torchrun", "accelerate")


def _stand_ins(tiny_dir: Path) -> dict[str, str]:
    """README placeholder → what CI has in the same layout."""
    return {'"/models/Qwen-Audio"': repr(str(tiny_dir / "checkpoint"))}


def test_the_readme_has_code_to_check():
    assert PYTHON and SHELL


@pytest.mark.slow
@pytest.mark.parametrize("code,line", PYTHON, ids=[f"line{line}" for _, line in PYTHON])
def test_python_block_runs(code, line, tiny_dir, tmp_path, monkeypatch):
    for placeholder, stand_in in _stand_ins(tiny_dir).items():
        code = code.replace(placeholder, stand_in)
    monkeypatch.chdir(tmp_path)
    exec(compile(code, f"README.md:{line}", "exec"), {"__name__": "__readme__"})


def _commands(code: str) -> list[list[str]]:
    lines = [ln.split("#", 1)[0].strip() for ln in code.splitlines()]
    return [shlex.split(ln) for ln in lines if ln]


def _make_targets() -> set[str]:
    text = (REPO / "Makefile").read_text()
    return set(re.findall(r"^([\w.-]+):", text, flags=re.M))


@pytest.mark.parametrize("code,line", SHELL, ids=[f"line{line}" for _, line in SHELL])
def test_shell_block_names_real_targets_and_scripts(code, line):
    for argv in _commands(code):
        if argv[0] == "make":
            assert set(argv[1:]) <= _make_targets(), f"README.md:{line}: no such make target in {argv}"
        elif argv[0] in ("python", "python3") and argv[1].endswith(".py"):
            script = REPO / argv[1]
            assert script.exists(), f"README.md:{line}: {argv[1]} does not exist"
            done = subprocess.run([sys.executable, str(script), "--help"], cwd=REPO, capture_output=True, text=True,
                                  env={**os.environ, "HF_HUB_OFFLINE": "1"})
            assert done.returncode == 0, f"README.md:{line}: {argv[1]} --help failed:\n{done.stderr}"
        elif argv[0] == "workbench" or argv[0] in LAUNCHERS:
            # `torchrun … -m workbench.cli SUB …` runs the same console script under a launcher
            sub = argv[1] if argv[0] == "workbench" else argv[argv.index("workbench.cli") + 1]
            assert argv[0] == "workbench" or argv[argv.index("workbench.cli") - 1] == "-m", argv
            from workbench.cli import main
            with pytest.raises(SystemExit) as exit_:
                main([sub, "--help"])
            assert exit_.value.code == 0
        else:
            pytest.fail(f"README.md:{line}: a shell command this test does not know how to check: {argv}")
