"""Nano's own held-out split through the runner: the items `recipes/eval_nano.py` scored for
`workbench/assets/nano/eval.json`, rebuilt and run with each task's registered prompt and scorer.

    from workbench.evaluation.heldout import evaluate_heldout
    runs = evaluate_heldout(wb.load("nano"), "runs/heldout", per_task=3)   # {task: HeldOutRun}

Test item i of a corpus task is rebuilt exactly as `recipes/make_corpus.py` builds it with seed 0
(`replicas.synthetic_item`: the same generator seed, the same 16-bit FLAC), so a run scores the
same items the recipe did. The recipe decoded with 64 new tokens (96 for SRWT) and so do these runs,
so that their outputs can be compared with the recipe's; each runner Task is the registered
benchmark whose tag prompt the corpus reproduces (`synth.prompts.BENCHMARK`), given the item's
language where the benchmark fixes another (ASR in five languages, S2TT pairs, English SRWT).
`scripts/evaluate_nano_heldout.py` writes the comparison with eval.json.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile

from workbench.audio import SAMPLE_RATE
from workbench.synth import SPLITS
from workbench.synth import TASKS as CORPUS_TASKS
from workbench.synth.prompts import BENCHMARK
from workbench.synth.tasks import Item as SynthItem
from workbench.synth.tasks import build_items

from .items import Item
from .replicas import SEED
from .runner import EvalResult, evaluate
from .tasks import Task, get_task

# Test items per task in the corpus eval.json was measured on (assets/nano/eval.json "items").
SPLIT_SIZES = {"asr": 200, "s2tt": 60, "aac": 60, "asc": 60, "ser": 60, "aqa": 60, "vsc": 60, "mna": 1000, "srwt": 60}
TASKS = tuple(SPLIT_SIZES)    # the tag tasks; chat has no benchmark in the registry
# The registered benchmark each corpus task reproduces the prompt of (synth.prompts.BENCHMARK names presets).
REGISTERED = {"asr": "librispeech-test-clean", "s2tt": "covost2-en-de", "aac": "clotho", "asc": "tut2017",
              "ser": "meld", "aqa": "clotho-aqa", "vsc": "vocalsound", "mna": "nsynth", "srwt": "srwt"}
# Items built together, as make_corpus chunks its jobs (16; MNA 64, rendered in one fluidsynth run each).
_CHUNK = {"mna": 64}


@dataclass(frozen=True)
class HeldOutItem:
    index: int            # i of {task}-test-{i:06d}
    row: dict[str, Any]   # the corpus manifest's fields: prompt, reference, language, target_language, …
    item: Item            # what the runner reads


@dataclass(frozen=True)
class HeldOutRun:
    task: str                              # corpus task
    items: tuple[HeldOutItem, ...]         # in test order
    outputs: tuple[str, ...]               # the runner's outputs, in test order
    results: tuple[EvalResult, ...]        # one run per language (pair), scored by its benchmark


def max_new_tokens(task: str) -> int:
    """eval_nano.py's decoding limit."""
    return 96 if task == "srwt" else 64


def build_heldout(task: str, indices: range | list[int], audio_dir: str | Path) -> list[HeldOutItem]:
    """Test items `indices` of corpus task `task`, their audio written under `audio_dir` as 16 kHz
    16-bit FLAC (as make_corpus writes it) with the manifest row beside it as JSON; both are reused
    when already there."""
    if task not in SPLIT_SIZES:
        raise ValueError(f"no held-out task {task!r}: choose from {', '.join(TASKS)}")
    indices = list(indices)
    if any(not 0 <= i < SPLIT_SIZES[task] for i in indices):
        raise ValueError(f"{task}: indices must lie in 0…{SPLIT_SIZES[task] - 1} (the test split's size)")
    folder = Path(audio_dir) / task
    folder.mkdir(parents=True, exist_ok=True)
    built: dict[int, HeldOutItem] = {}
    for i in indices:   # built before: its manifest row beside its audio (synthesis is the slow part)
        row_file, audio = folder / f"{task}-test-{i:06d}.json", folder / f"{task}-test-{i:06d}.flac"
        if row_file.exists() and audio.exists():
            built[i] = _item(i, json.loads(row_file.read_text(encoding="utf-8")), audio)
    missing = [i for i in indices if i not in built]
    step = _CHUNK.get(task, 16)
    for start in range(0, len(missing), step):
        chunk = missing[start:start + step]
        rngs = [np.random.default_rng([SEED, CORPUS_TASKS.index(task), SPLITS.index("test"), i]) for i in chunk]
        built.update((i, _write(task, i, synth, folder)) for i, synth in zip(chunk, build_items(task, "test", rngs)))
    return [built[i] for i in indices]


def _write(task: str, index: int, synth: SynthItem, folder: Path) -> HeldOutItem:
    item_id = f"{task}-test-{index:06d}"
    audio = folder / f"{item_id}.flac"
    row = {"id": item_id, "task": task, "prompt": synth.prompt, "reference": synth.reference, **synth.fields}
    for path, write in ((audio, lambda t: soundfile.write(t, synth.audios[0], SAMPLE_RATE, subtype="PCM_16",
                                                           format="FLAC")),
                        (folder / f"{item_id}.json", lambda t: t.write_text(json.dumps(row, ensure_ascii=False)))):
        temporary = path.with_name(f".{path.name}.tmp")   # whole files only: a kill leaves no half file
        write(temporary)
        temporary.replace(path)
    return _item(index, row, audio)


def _item(index: int, row: dict[str, Any], audio: Path) -> HeldOutItem:
    fields = {k: v for k, v in row.items() if k not in ("id", "task", "prompt", "reference")}
    question = row.get("question") if row["task"] == "aqa" else None
    return HeldOutItem(index, row, Item(row["id"], audio, row["reference"], question=question, meta=fields))


def runner_task(task: str, row: dict[str, Any]) -> Task:
    """The registered benchmark for this corpus item, with the item's language; its tag prompt must
    render to the corpus prompt (else one clear error: the registry and the corpus disagree)."""
    base = get_task(REGISTERED[task])
    lang, target = row.get("language"), row.get("target_language")
    if task == "asr" or task == "srwt":
        base = dataclasses.replace(base, name=f"{base.name}[{lang}]", preset_fields={"lang": lang}, language=lang)
    elif task == "s2tt":
        base = dataclasses.replace(base, name=f"covost2-{lang}-{target}", preset_fields={"src": lang, "tgt": target},
                                   language=lang, target_language=target)
    probe = Item(row["id"], Path(row["id"]), row["reference"], question=row.get("question"))
    if base.prompt(probe).render() != row["prompt"]:
        raise ValueError(f"{row['id']}: task {base.name!r} prompts {base.prompt(probe).render()!r} but the corpus "
                         f"item has {row['prompt']!r}; synth.prompts.BENCHMARK[{task!r}] = {BENCHMARK[task]!r}")
    return base


def evaluate_heldout(model: Any, out: str | Path, *, tasks: tuple[str, ...] = TASKS, per_task: int | None = None,
                     batch_size: int = 8, progress: bool = False) -> dict[str, HeldOutRun]:
    """Run `model` over the first `per_task` test items of each task (all with None) under
    `out/runs/TASK/GROUP`, audio in `out/audio`. Resumable like every run (records are keyed)."""
    out = Path(out)
    runs = {}
    for task in tasks:
        count = SPLIT_SIZES.get(task, 0) if per_task is None else min(per_task, SPLIT_SIZES.get(task, 0))
        held = build_heldout(task, range(count), out / "audio")
        groups: dict[str, list[HeldOutItem]] = {}
        for h in held:   # one run per registered prompt: a language, or a translation pair
            groups.setdefault(runner_task(task, h.row).name, []).append(h)
        outputs: dict[str, str] = {}
        results = []
        for name, members in groups.items():
            result = evaluate(model, runner_task(task, members[0].row), [h.item for h in members],
                              out / "runs" / task / name, batch_size=batch_size, max_new_tokens=max_new_tokens(task),
                              progress=progress)
            outputs.update((r["id"], r["output"]) for r in result.records)
            results.append(result)
        runs[task] = HeldOutRun(task, tuple(held), tuple(outputs[h.item.id] for h in held), tuple(results))
    return runs
