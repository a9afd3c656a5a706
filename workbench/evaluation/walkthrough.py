"""One benchmark walk-through for the task notebooks (`notebooks/10_asr` … `19_chat`).

    from workbench.evaluation.walkthrough import walkthrough
    wt = walkthrough("meld", model=MODEL, device=DEVICE, dtype=DTYPE, data=DATA)
    wt.metrics            # the scores against the paper, one row per (task, metric, recipe)
    wt.records            # one row per item: task, id, origin, reference, output, scores…
    wt.probe(prompt, wt.example()["audio"], swap_variants(prompt, slot="task"))

Every task notebook does the same thing before it can say anything about its task: find the data
(the dataset as distributed under `WORKBENCH_DATA`, or the tiny native-layout replicas written into a
temporary folder), load the model, run `evaluate` on each of its tasks, gather the records, and probe
tags on one clip. That machinery lives here, once; the notebooks keep only what is particular to
their task. Nothing here decides what a number means: a replica's scores say what the model does on
a few held-out items of nano's own world, and the notebooks say so.
"""
from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd

from workbench.evaluation.items import Item
from workbench.evaluation.readers import read_dataset
from workbench.evaluation.replicas import ITEMS_RANGE, build_replicas
from workbench.evaluation.runner import evaluate
from workbench.evaluation.runner_report import EvalResult
from workbench.evaluation.tasks import Task, get_task
from workbench.models.loading import load
from workbench.tags import TagPrompt, TagVariant, preset

NANO = "nano"
ITEMS_PER_DATASET = 6   # replica items per dataset: enough for a figure, few enough for CI on 2 cores

# Each task's folder under WORKBENCH_DATA, named as the dataset is distributed (and as the replicas
# write it). NSynth's reader takes the folder above nsynth-test/.
DATA_FOLDERS: dict[str, str] = {
    "librispeech-dev-clean": "LibriSpeech", "aishell1-test": "data_aishell",
    "covost2-en-de": "covost2", "covost2-zh-en": "covost2", "srwt": "srwt", "clotho": "clotho",
    "clotho-aqa": "clothoaqa", "cochlscene": "CochlScene", "tut2017": "TUT-acoustic-scenes-2017-development",
    "meld": "MELD.Raw", "vocalsound": "vocalsound", "nsynth": ".",
}


def official_prompt(task: str | Task) -> TagPrompt:
    """The task's official tag prompt (what follows `<audio>FILE</audio>`)."""
    task = get_task(task) if isinstance(task, str) else task
    return preset(task.preset, **task.preset_fields)


def prompt_table(prompt: TagPrompt, meaning: Mapping[str, str]) -> pd.DataFrame:
    """The prompt taken apart: one row per slot with its tag (or text) and what it says."""
    slots = prompt.slots()
    missing = [slot for slot, _ in slots if slot not in meaning]
    if missing:
        raise ValueError(f"meaning has no entry for the slot(s) {missing}: give one sentence for each of "
                         f"{[slot for slot, _ in slots]}")
    return pd.DataFrame([{"slot": slot, "tag": text, "what it says": meaning[slot]} for slot, text in slots])


def paper_table(*tasks: str) -> pd.DataFrame:
    """The paper's numbers beside the best earlier system, one row per (task, metric)."""
    rows = []
    for name in tasks:
        task = get_task(name)
        for metric, value in task.paper.items():
            previous = task.previous_best.get(metric)
            rows.append({"task": task.name, "metric": metric, "Qwen-Audio (paper)": value,
                         "previous best": previous[0] if previous else None,
                         "by": previous[1] if previous else None})
    return pd.DataFrame(rows).set_index(["task", "metric"])


def prepare_data(data: str | Path | None = None, *, items_per_dataset: int = ITEMS_PER_DATASET,
                 real_clips: str | Path | None = None) -> tuple[Path, dict[str, str]]:
    """The data folder and each replica item's origin: `data` itself when given (a folder with the
    datasets as distributed; no origins), else replicas written into a new temporary folder. Real
    clips (a folder laid out like `../shared/audio`) go into the ASR replicas when there."""
    if data is not None:
        data = Path(data).expanduser()
        if not data.is_dir():
            raise FileNotFoundError(f"data={str(data)!r} is not a folder: set WORKBENCH_DATA to the folder holding "
                                    "the datasets as distributed, or unset it to use the replicas")
        return data, {}
    real = Path(real_clips) if real_clips is not None else None
    out = Path(tempfile.mkdtemp(prefix="wb_replicas_"))
    build_replicas(out, items_per_dataset=items_per_dataset,
                   real_clips=real if real is not None and (real / "labels.jsonl").is_file() else None)
    replicas = json.loads((out / "replicas.json").read_text())
    return out, {item: origin for replica in replicas.values() for item, origin in replica.items()}


@dataclass(frozen=True, eq=False)
class Walkthrough:
    """A model's run on one or more tasks: results, records and what the tag probes need."""

    model: Any
    source: str                       # what was loaded: "nano" or a checkpoint folder
    data: Path
    on_replicas: bool
    results: dict[str, EvalResult]    # task name → result, in the order asked
    origins: dict[str, str] = field(default_factory=dict)   # replica item id → where it came from

    @property
    def name(self) -> str:
        """A short name for titles: "nano", or the checkpoint folder's name."""
        return Path(self.source).name

    @property
    def real(self) -> bool:
        """False on the embedded nano model: cells that need real weights skip."""
        return self.source != NANO

    @property
    def parameters(self) -> int:
        return int(self.model.describe()["total"])

    def __str__(self) -> str:
        where = "the replicas (nano's held-out items and real clips)" if self.on_replicas else str(self.data)
        return (f"{self.name}: {self.parameters / 1e6:.1f} M parameters, {', '.join(self.results)} on {where}, "
                f"{sum(len(r.records) for r in self.results.values())} items")

    @property
    def result(self) -> EvalResult:
        """The result of the first task (the only one, for most notebooks)."""
        return next(iter(self.results.values()))

    @property
    def task(self) -> Task:
        return get_task(self.result.task)

    @property
    def metrics(self) -> pd.DataFrame:
        """Every task's scores against the paper (EvalResult.to_pandas, without the notes)."""
        frames = {name: result.to_pandas().drop(columns="note") for name, result in self.results.items()}
        return pd.concat(frames, names=["task", "row"]).reset_index(level="row", drop=True)

    @property
    def records(self) -> pd.DataFrame:
        """One row per item of every task: task, origin ("dataset" off the replicas), then the record."""
        frames = []
        for name, result in self.results.items():
            frame = result.records_to_pandas()
            frame.insert(0, "origin", [self.origins.get(i, "dataset") for i in frame["id"]])
            frame.insert(0, "task", name)
            frames.append(frame)
        return pd.concat(frames, ignore_index=True)

    def example(self, task: str | None = None, index: int = 0, *, synthetic: bool = False) -> dict[str, Any]:
        """One record (id, audio, reference, output, score…) of `task` (default: the first task).
        `synthetic`: count only the replica items from nano's held-out split, inside its world
        (the ASR replicas also hold a real recording); on a real dataset every item counts."""
        result = self.results[task] if task is not None else self.result
        records = list(result.records)
        if synthetic and self.on_replicas:
            records = [r for r in records if self.origins.get(r["id"], "").startswith("synthetic")]
        return records[index]

    def items(self, task: str | None = None) -> list[Item]:
        """The dataset items behind the records (questions, extra fields), in the records' order."""
        result = self.results[task] if task is not None else self.result
        spec = get_task(result.task)
        return read_dataset(spec.dataset, self.data / DATA_FOLDERS[spec.name], **spec.reader_kwargs)[:len(result.records)]

    def generate(self, prompt: TagPrompt | str, audio: Any, max_new_tokens: int | None = None) -> str:
        return self.model.generate(prompt, audio, max_new_tokens=max_new_tokens or self.task.max_new_tokens).text

    def probe(self, prompt: TagPrompt, audio: Any, variants: Sequence[TagVariant], *,
              max_new_tokens: int | None = None) -> pd.DataFrame:
        """A tag probe: the official prompt, then each variant, on one audio; `moved` marks the
        outputs that differ from the official prompt's."""
        runs = [("official prompt", prompt.render(), prompt)] + [(v.label, v.prompt_text, v.prompt) for v in variants]
        rows = [{"variant": label, "tags": tags, "output": self.generate(p, audio, max_new_tokens)}
                for label, tags, p in runs]
        frame = pd.DataFrame(rows)
        return frame.assign(moved=frame["output"] != frame["output"].iloc[0])


def walkthrough(tasks: str | Sequence[str], *, model: str = NANO, device: str = "cpu", dtype: str = "float32",
                data: str | Path | None = None, limit: int = ITEMS_PER_DATASET,
                real_clips: str | Path | None = None) -> Walkthrough:
    """Load `model` and evaluate it on each task (names of `tasks.TASKS`) over `data` (the datasets
    as distributed; None: the replicas), `limit` items a task, run folders in a temporary folder.

    On a real checkpoint the runner also re-runs the first batch one item at a time and stops if the
    outputs differ (left padding cost the official batched scripts most of their MELD accuracy);
    nano's batches are checked by the test suite, so on nano that check is off to halve the run."""
    names = [tasks] if isinstance(tasks, str) else list(tasks)
    unknown = [n for n in names if n not in DATA_FOLDERS]
    if not names or unknown:
        raise ValueError(f"no walk-through for {unknown or 'no task'}: choose from {', '.join(DATA_FOLDERS)}")
    # A replica holds 2 to 6 items a dataset; `limit` then takes the first of them.
    items_per_dataset = min(max(limit, ITEMS_RANGE[0]), ITEMS_RANGE[1])
    folder, origins = prepare_data(data, items_per_dataset=items_per_dataset, real_clips=real_clips)
    loaded = load(model, device=device, dtype=dtype)
    runs = Path(tempfile.mkdtemp(prefix="wb_runs_"))
    results = {name: evaluate(loaded, name, folder / DATA_FOLDERS[name], runs / name, limit=limit, progress=False,
                              check_batch=model != NANO)
               for name in names}
    return Walkthrough(model=loaded, source=str(model), data=folder, on_replicas=data is None, results=results,
                       origins=origins)
