"""environment.yml (conda users) and pyproject.toml (pip users) must list the same packages."""
from __future__ import annotations

import re
from pathlib import Path

import tomllib
import yaml

REPO = Path(__file__).resolve().parents[1]


def _pyproject_requirements() -> set[str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        reqs += extra
    return {re.sub(r"\s+", "", r) for r in reqs}


def _environment_pip_requirements() -> set[str]:
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    return {re.sub(r"\s+", "", r) for r in pip if not r.startswith("-e")}


def test_environment_yml_lists_the_same_requirements_as_pyproject() -> None:
    in_pyproject, in_env = _pyproject_requirements(), _environment_pip_requirements()
    assert in_pyproject - in_env == set(), "missing from environment.yml"
    assert in_env - in_pyproject == set(), "missing from pyproject.toml"


def test_constraints_pin_the_cpu_torch() -> None:
    assert (REPO / "constraints-cpu.txt").read_text().split() == ["torch==2.13.0"]
