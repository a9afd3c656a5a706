"""Shared test fixtures. `../shared` holds golden data from other projects: tests that need it
skip when it is missing, except under CI=true, where a missing fixture is a failure."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

# Under pytest-xdist every worker is its own process: one torch thread each keeps 2 workers from
# oversubscribing 2 cores (a Whisper decoder step ran 7x slower with 2 threads per worker).
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def _need(path: Path) -> Path:
    if not path.exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{path} is missing; CI needs ../shared beside the checkout")
        pytest.skip(f"{path} not found (../shared is not beside this checkout)")
    return path


@pytest.fixture(scope="session")
def shared_audio() -> Path:
    return _need(SHARED / "audio")


@pytest.fixture(scope="session")
def tiny_dir() -> Path:
    """The official-layout tiny Qwen-Audio fixture (checkpoint/, clips/, golden.*)."""
    return _need(SHARED / "fixtures" / "qwen_audio_v1_tiny")


@pytest.fixture(scope="session")
def golden(tiny_dir: Path) -> dict:
    return json.loads((tiny_dir / "golden.json").read_text())


@pytest.fixture(scope="session")
def golden_chat(tiny_dir: Path) -> dict:
    return json.loads((tiny_dir / "golden_chat.json").read_text())


@pytest.fixture(scope="session")
def golden_arrays(tiny_dir: Path) -> dict[str, np.ndarray]:
    with np.load(tiny_dir / "golden.npz") as z:
        return {k: z[k] for k in z.files}
