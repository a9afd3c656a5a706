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


@pytest.fixture(scope="module")
def tiny_qwen(tiny_dir: Path):
    """The fixture's official-layout Qwen-Audio, loaded once per test module, on one torch thread:
    the tiny model gains nothing from more, and two-thread ops slow down ~10x when test workers
    share the CPU. The thread count is restored for the other modules."""
    from workbench.models.qwen_audio import load_qwen_audio

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield load_qwen_audio(tiny_dir / "checkpoint")
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny_clip(tiny_dir: Path) -> str:
    """The LibriSpeech clip of golden case 0."""
    return str(tiny_dir / "clips" / "1272-128104-0000.flac")


@pytest.fixture(scope="module")
def tiny_whisper(tmp_path_factory):
    """A tiny random Whisper written to disk and loaded through `workbench.load`."""
    from tiny_models import write_whisper

    import workbench

    return workbench.load(write_whisper(tmp_path_factory.mktemp("whisper")))


@pytest.fixture(scope="module")
def noise() -> np.ndarray:
    """1.5 s of seeded white noise at 16 kHz."""
    return (0.1 * np.random.default_rng(0).standard_normal(24_000)).astype(np.float32)
