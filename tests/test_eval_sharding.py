"""Sharding an evaluation over processes: the split, the setup, and a 2-process gloo run that must
equal a single-process run record for record."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from test_eval_runner import librispeech_layout  # tests/ is on sys.path (pytest's rootdir import)

import workbench as wb
from workbench.evaluation import sharding
from workbench.evaluation.runner import evaluate
from workbench.evaluation.runner_records import read_records
from workbench.evaluation.sharding import Shard

REPO = Path(__file__).resolve().parents[1]


def test_items_go_to_rank_i_mod_world_size():
    shards = [Shard(rank=r, world_size=3) for r in range(3)]
    assert [s.indices(8) for s in shards] == [[0, 3, 6], [1, 4, 7], [2, 5]]
    assert sorted(i for s in shards for i in s.indices(8)) == list(range(8))
    assert [s.records_name for s in shards] == [f"records.rank{r}.jsonl" for r in range(3)]
    assert Shard().records_name == "records.jsonl" and Shard().indices(2) == [0, 1]
    with pytest.raises(ValueError, match="rank 2 outside a world of 2"):
        Shard(rank=2, world_size=2)


def test_setup_alone_starts_no_process_group(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert sharding.setup() == Shard() and not dist.is_initialized()
    assert Shard().device() == (None if not torch.cuda.is_available() else "cuda:0")


def test_launcher_without_a_rendezvous_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    with pytest.raises(RuntimeError, match="MASTER_ADDR is not set: start the command with torchrun"):
        sharding.setup()
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ValueError, match="WORLD_SIZE='two' is not an integer"):
        sharding.setup()


def test_torchrun_two_gloo_processes_equal_one(tmp_path):
    """`torchrun --nproc-per-node 2 -m workbench.cli eval …` on CPU (gloo): rank-disjoint records,
    merged in item order into exactly what one process writes."""
    data = librispeech_layout(tmp_path, n=4)
    out = tmp_path / "two"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1", "--nproc-per-node", "2",
               "-m", "workbench.cli", "eval", "librispeech-dev-clean", "--data", str(data), "--model", "nano",
               "--out", str(out), "--batch-size", "2", "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("| WER ↓ | official |") == 1          # rank 0 prints the table, once
    torch.set_num_threads(1)
    nano = wb.load("nano")
    alone = evaluate(nano, "librispeech-dev-clean", data, tmp_path / "one", batch_size=2, progress=False)
    merged = read_records(out / "records.jsonl")
    assert merged == read_records(tmp_path / "one" / "records.jsonl")
    assert [r["index"] for r in merged] == [0, 1, 2, 3]
    assert [r["index"] for r in read_records(out / "records.rank0.jsonl")] == [0, 2]
    assert [r["index"] for r in read_records(out / "records.rank1.jsonl")] == [1, 3]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["metrics"] == alone.summary["metrics"]
    assert summary["counts"]["ranks"] == 2 and summary["counts"]["generated"] == 4
    assert summary["batch_check"] == {"status": "passed", "items": 4, "ranks": 2, "batch_size": 2}
    # a rerun with another world size finds every record by key, whichever rank wrote it
    again = evaluate(nano, "librispeech-dev-clean", data, out, batch_size=2, progress=False)
    assert again.summary["counts"]["generated"] == 0 and again.summary["counts"]["reused"] == 4
    assert read_records(out / "records.jsonl") == merged
