"""Every benchmark on its tiny replica: the evaluation layer end to end on one model.

    import workbench as wb
    from workbench.evaluation.suite import evaluate_replicas
    table = evaluate_replicas(wb.load("nano"), "runs/replicas")   # one row per (replica, metric, recipe)

`build_replicas` lays out a few items of every dataset in its native layout (nano's held-out split
and real clips); each replica is run with its benchmark's official prompt and scored with the
benchmark's recipes through `evaluate`, so a replica's numbers say what the model does on those
items and nothing about the real benchmark. Runs resume like any evaluation (records are keyed).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from workbench.evaluation.replicas import BENCHMARK_OF, REPLICAS, build_replicas, read_replica
from workbench.evaluation.runner import evaluate


def evaluate_replicas(model: Any, out: str | Path, *, names: Sequence[str] | None = None, batch_size: int = 8,
                      real_clips: Path | None = None, progress: bool = False) -> pd.DataFrame:
    """Build the replicas under `out/data` (once) and evaluate `model` on each under `out/runs/NAME`."""
    out = Path(out)
    names = list(REPLICAS) if names is None else list(names)
    unknown = [n for n in names if n not in REPLICAS]
    if unknown:
        raise ValueError(f"no replica {unknown}: choose from {', '.join(REPLICAS)}")
    data = out / "data"
    if not (data / "replicas.json").exists():
        build_replicas(data, real_clips=real_clips)
    frames = []
    for name in names:
        result = evaluate(model, BENCHMARK_OF[name], read_replica(name, data), out / "runs" / name,
                          batch_size=batch_size, progress=progress)
        table = result.to_pandas()
        table.insert(0, "items", len(result.records))
        table.insert(0, "benchmark", result.task)
        table.insert(0, "replica", name)
        frames.append(table)
    return pd.concat(frames, ignore_index=True)
