"""Generate the corpus: audio files plus one JSON-lines manifest per split.

Layout of `out/`:
    train.jsonl, validation.jsonl, test.jsonl   one item a line, tasks in TASKS order
    audio/{split}/{task}/{id}.flac               16 kHz mono, 16-bit FLAC
    corpus.json                                  options, counts, sizes, generation speed

Item `i` of a task and split is generated from `default_rng([seed, task, split, i])` alone (MNA
renders its notes in fixed chunks of that order), so the corpus is the same for any number of
workers. Manifest fields: `id`, `task`, `split`, `audio` (path relative to the manifest),
`duration` (seconds, = samples / 16000), `prompt` (the tags after `<audio>PATH</audio>`, or the
whole ChatML prompt for chat), `reference` (the target as the official evaluation compares it,
without the stop token), `stop` (the token that ends the target in training), `content_keys`
(what decided the split), then task fields. Chat items also list `audios` and `durations`, one
per `<audio>` in the prompt, in order (`audio`/`duration` are the first).
"""
from __future__ import annotations

import json
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from workbench.errors import CorpusError

from .prompts import STOP, TASKS, chat_prompt, user_message
from .splits import SPLITS
from .tasks import SAMPLE_RATE, Item, build_items

MAX_SECONDS = 30.0  # Qwen-Audio cuts audio at 30 s


@dataclass(frozen=True)
class CorpusOptions:
    per_task: int = 100  # items per task, all splits together
    seed: int = 0
    # (task, items) pairs that replace per_task for those tasks: tasks that need more examples
    # (MNA has ~70 pitches to tell apart) get them without growing the rest. Item i of a task is
    # the same whatever the counts, so a larger corpus contains the smaller one's items.
    per_task_for: tuple[tuple[str, int], ...] = ()
    tasks: tuple[str, ...] = TASKS
    eval_fraction: float = 0.1  # share of each task's items in validation, and again in test
    workers: int = 1  # processes; the output does not depend on it
    chunk: int = 16  # items per job; MNA jobs take 4 chunks, rendered in one fluidsynth run

    def __post_init__(self) -> None:
        unknown = [t for t in self.tasks if t not in TASKS]
        if unknown or not self.tasks:
            raise CorpusError(f"tasks {list(self.tasks)!r}: unknown {unknown or 'none given'}; "
                              f"choose from {', '.join(TASKS)}")
        if not 0 < self.eval_fraction < 0.5:
            raise CorpusError(f"eval_fraction={self.eval_fraction}: use a share between 0 and 0.5 "
                              "(validation and test each get this share)")
        unknown = [t for t, _ in self.per_task_for if t not in self.tasks]
        if unknown:
            raise CorpusError(f"per_task_for names {unknown}, which are not among the tasks generated "
                              f"({', '.join(self.tasks)}); drop them or add them to tasks")
        for task, count in ((None, self.per_task), *self.per_task_for):
            if count < 3:
                where = f"per_task_for[{task!r}]" if task else "per_task"
                raise CorpusError(f"{where}={count}: need at least 3 items per task, one per split")
        if self.workers < 1 or self.chunk < 1:
            raise CorpusError(f"workers={self.workers}, chunk={self.chunk}: both must be at least 1")


def split_sizes(options: CorpusOptions, task: str | None = None) -> dict[str, int]:
    """Items per split of `task` (or of a task without an override): validation and test get
    eval_fraction (at least one each)."""
    total = dict(options.per_task_for).get(task, options.per_task)
    held_out = max(1, round(total * options.eval_fraction))
    return {"train": total - 2 * held_out, "validation": held_out, "test": held_out}


@dataclass(frozen=True)
class CorpusSummary:
    out_dir: str
    items: dict  # split → task → count
    audio_seconds: float
    wall_seconds: float
    items_per_second: float
    bytes: int


def _item_rng(seed: int, task: str, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, TASKS.index(task), SPLITS.index(split), index])


def _write_audio(path: Path, audio: np.ndarray) -> float:
    if audio.ndim != 1 or not np.all(np.isfinite(audio)):
        raise RuntimeError(f"{path.name}: audio must be finite mono samples")
    peak = float(np.max(np.abs(audio)))
    if peak > 1.0 or len(audio) > MAX_SECONDS * SAMPLE_RATE or len(audio) == 0:
        raise RuntimeError(f"{path.name}: {len(audio) / SAMPLE_RATE:.2f} s with peak {peak:.2f}; every clip must "
                           f"last 0–{MAX_SECONDS:.0f} s and stay within ±1 (a generator bug)")
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, audio, SAMPLE_RATE, subtype="PCM_16", format="FLAC")
    return len(audio) / SAMPLE_RATE


def _row(item: Item, item_id: str, split: str, paths: list[str], durations: list[float]) -> dict:
    if item.task == "chat":
        history = [(user_message([paths[i] for i in t.audio], t.text), t.answer) for t in item.turns[:-1]]
        last = item.turns[-1]
        prompt = chat_prompt(user_message([paths[i] for i in last.audio], last.text), history)
    else:
        prompt = item.prompt
    row = {"id": item_id, "task": item.task, "split": split, "audio": paths[0], "duration": durations[0],
           "prompt": prompt, "reference": item.reference, "stop": STOP[item.task],
           "content_keys": list(item.content_keys)}
    if item.task == "chat":
        row |= {"audios": paths, "durations": durations}
    return row | item.fields


def _job(out_dir: str, seed: int, task: str, split: str, start: int, stop: int) -> list[dict]:
    """Build and write items start…stop-1 of one task and split; return their manifest rows."""
    rngs = [_item_rng(seed, task, split, i) for i in range(start, stop)]
    rows = []
    for index, item in zip(range(start, stop), build_items(task, split, rngs)):
        item_id = f"{task}-{split}-{index:06d}"
        names = [f"{item_id}.flac"] if len(item.audios) == 1 else [f"{item_id}-{j + 1}.flac" for j in range(len(item.audios))]
        paths = [f"audio/{split}/{task}/{name}" for name in names]
        durations = [_write_audio(Path(out_dir) / p, a) for p, a in zip(paths, item.audios)]
        rows.append(_row(item, item_id, split, paths, durations))
    return rows


def generate_corpus(out_dir: str | Path, options: CorpusOptions = CorpusOptions()) -> CorpusSummary:
    """Write the corpus to `out_dir` (created; existing manifests are replaced)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sizes = {task: split_sizes(options, task) for task in options.tasks}
    # Loading the soundfont costs ~0.5 s a fluidsynth run, so MNA jobs are larger.
    jobs = [(str(out), options.seed, task, split, start, min(start + step, sizes[task][split]))
            for split in SPLITS for task in options.tasks
            for step in [options.chunk * (4 if task == "mna" else 1)] for start in range(0, sizes[task][split], step)]
    began = time.perf_counter()
    if options.workers == 1:
        results = [_job(*job) for job in jobs]
    else:
        with ProcessPoolExecutor(max_workers=options.workers) as pool:
            results = list(pool.map(_job, *zip(*jobs)))
    wall = time.perf_counter() - began
    counts: dict[str, dict[str, int]] = {split: {} for split in SPLITS}
    seconds, size = 0.0, 0
    for split in SPLITS:
        rows = [row for job, result in zip(jobs, results) if job[3] == split for row in result]
        with open(out / f"{split}.jsonl", "w", encoding="utf-8") as manifest:
            for row in rows:
                manifest.write(json.dumps(row, ensure_ascii=False) + "\n")
                counts[split][row["task"]] = counts[split].get(row["task"], 0) + 1
                seconds += sum(row.get("durations", [row["duration"]]))
                size += sum((out / p).stat().st_size for p in row.get("audios", [row["audio"]]))
    n_items = sum(sum(c.values()) for c in counts.values())
    summary = CorpusSummary(str(out), counts, round(seconds, 2), round(wall, 2), round(n_items / wall, 2), size)
    (out / "corpus.json").write_text(json.dumps({"options": asdict(options), **asdict(summary)}, indent=2) + "\n")
    return summary


def read_manifest(path: str | Path) -> list[dict]:
    """The rows of a manifest, with `audio` (and chat `audios`) resolved against its folder."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"manifest {path} not found; generate a corpus with "
                                "`python recipes/make_corpus.py --out DIR` first")
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}:{number} is not a JSON object ({error}); the manifest is damaged, "
                             "regenerate it") from error
        row["audio_path"] = str(path.parent / row["audio"])
        if "audios" in row:
            row["audio_paths"] = [str(path.parent / a) for a in row["audios"]]
        rows.append(row)
    return rows
