"""Run a model over a benchmark: batched greedy generation, resumable records, scores vs the paper.

    import workbench as wb
    from workbench.evaluation.runner import evaluate
    result = evaluate(wb.load("/models/Qwen-Audio"), "librispeech-test-clean", "/data/LibriSpeech", "runs/ls")
    result.to_pandas(); print(result.to_markdown()); result.plot()

or `workbench eval TASK --data DIR --model SOURCE --out DIR`. What it does, and why:

- items come from the task's reader (`readers.read_dataset(task.dataset, data, **task.reader_kwargs)`),
  prompts from `task.prompt(item)` (`task.qwen2_prompt(item)` for Qwen2-Audio, after its audio
  placeholder; `task.whisper_prompt(item)` for Whisper);
- generation is greedy and batched (`model.generate_batch`). Within a window of a few batches the
  items are sorted by audio duration (read from the file header) so a batch pads little; records are
  still written in item order. The next batch's inputs (decoding, log-mel) are built in a thread
  while the model generates the current one;
- batched outputs must equal batch-size-1 outputs: the official batched scripts lost most of their
  ClothoAQA and MELD accuracy to left padding (QwenLM/Qwen-Audio#43). With `check_batch` (default)
  the run's first batch is re-run one item at a time and any difference stops the run
  (`BatchMismatchError`); the outcome is in `summary.json`;
- every item's record is appended to `out/records.jsonl` and flushed as soon as its window is done,
  keyed by a hash of what decides its output (`runner_records`); a rerun reuses every record whose
  key matches (an interrupted run resumes where it stopped; a half-written last line is dropped with
  a warning and recomputed), and items with the same key in one run (ClothoAQA repeats a question
  once per accepted answer) are generated once;
- `out/summary.json` holds every metric (`task.score`), counts, model identity, timing, batch check;
- under torchrun / accelerate the items are sharded over the processes (`sharding`; multi-node use
  is described there).
"""
from __future__ import annotations

import datetime
import json
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import soundfile

from workbench.evaluation import sharding
from workbench.evaluation.items import Item
from workbench.evaluation.runner_records import (
    RecordWriter,
    audio_hash,
    item_key,
    load_cache,
    model_identity,
    model_source,
    plain,
    read_records,
    write_records,
)
from workbench.evaluation.runner_report import EvalResult
from workbench.evaluation.sharding import Shard

__all__ = ["BatchMismatchError", "EvalResult", "RunOptions", "UnsupportedTaskError", "evaluate", "item_prompt",
           "read_items"]

WINDOW_BATCHES = 4      # items sorted by length together: 4 batches (a kill loses at most this many)


class UnsupportedTaskError(ValueError):
    """The model family cannot be prompted for this task (Whisper has no audio-analysis tags)."""


class BatchMismatchError(RuntimeError):
    """Batched generation gave another output than the same item alone."""


@dataclass(frozen=True)
class RunOptions:
    """How `evaluate` runs; validated once, recorded in summary.json."""

    limit: int | None = None            # the first `limit` items of the dataset
    batch_size: int = 8
    max_new_tokens: int | None = None   # None: the task's own (the official scripts' value)
    progress: bool = True               # a tqdm bar on rank 0
    check_batch: bool = True            # re-run the first batch one item at a time (module docstring)
    window: int | None = None           # items sorted by prompt length together; None: 4 batches

    def __post_init__(self) -> None:
        for name in ("limit", "max_new_tokens", "window"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{name}={value!r}: give a positive int, or None")
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"batch_size={self.batch_size!r}: give a positive int")

    @property
    def window_size(self) -> int:
        return max(self.window or WINDOW_BATCHES * self.batch_size, self.batch_size)


@dataclass
class _RankRun:
    """What one rank did; gathered on rank 0 for the summary."""

    rank: int
    keys: dict[int, str]
    generated: int = 0
    reused: int = 0
    shared: int = 0
    seconds: float = 0.0
    batch_check: dict[str, Any] = field(default_factory=lambda: {"status": "not run: nothing to generate"})


# --- items and prompts -----------------------------------------------------------------------

def _resolve_task(task: Any) -> Any:
    if isinstance(task, str):
        from workbench.evaluation.tasks import get_task
        return get_task(task)
    return task


def read_items(task: Any, data: str | Path | Sequence[Item], limit: int | None = None) -> list[Item]:
    """The task's items: read from the dataset folder `data` with the task's reader (or `data` itself
    when it is already a list of `Item`s), cut to the first `limit`."""
    if isinstance(data, (str, Path)):
        root = Path(data).expanduser()
        if not root.exists():
            raise FileNotFoundError(f"--data {root} does not exist: pass the {task.dataset} folder as distributed")
        from workbench.evaluation.readers import read_dataset
        items = list(read_dataset(task.dataset, root, **dict(task.reader_kwargs)))
    else:
        items = list(data)
    if not all(isinstance(item, Item) for item in items):
        raise TypeError("data must be a dataset folder or a list of workbench.evaluation.items.Item")
    items = items[:limit] if limit is not None else items
    if not items:
        raise ValueError(f"no items to evaluate for task {task.name!r} (data={data!r}, limit={limit})")
    return items


_LANGUAGE_TAG = re.compile(r"<\|([a-z]{2,3}(?:_[a-z]+)?)\|>")   # Whisper's <|en|>, <|zh|>, <|haw|>, <|zh_tr|>…


QWEN2_AUDIO_PREFIX = "<|audio_bos|><|AUDIO|><|audio_eos|>"   # the clip, as Qwen2-Audio's eval scripts put it


def item_prompt(model: Any, task: Any, item: Item) -> Any:
    """The item's prompt, by the model's family: a TagPrompt from `task.prompt` (Qwen-Audio, nano),
    Qwen2-Audio's natural-language prompt after its audio placeholder, or Whisper's decoder prefix."""
    family = getattr(model, "family", None)
    if family == "qwen2-audio":
        return _qwen2_prompt(task, item)
    if family != "whisper":
        return task.prompt(item)
    whisper = getattr(task, "whisper_prompt", None)
    prompt = whisper(item) if whisper is not None else None
    if prompt is None:
        raise UnsupportedTaskError(
            f"task {task.name!r} ({task.kind}) has no Whisper prompt: Whisper only transcribes and translates "
            "to English, it has no tags for this task. Evaluate it with a Qwen-Audio model, or pick an ASR or "
            "speech-translation task for Whisper")
    if getattr(model, "multilingual", True):
        return prompt
    # An English-only Whisper (*.en) was trained on <|startoftranscript|><|notimestamps|> alone: given
    # the multilingual <|en|><|transcribe|> it ends at once, with an empty transcript.
    other = [tag for tag in _LANGUAGE_TAG.findall(prompt) if tag != "en"]
    if other or "<|translate|>" in prompt:
        raise UnsupportedTaskError(
            f"task {task.name!r} asks an English-only Whisper for {', '.join(other) or 'translation'}: it only "
            "transcribes English. Load a multilingual Whisper (e.g. 'whisper-base') for this task")
    return prompt.replace("<|en|>", "").replace("<|transcribe|>", "")


def _qwen2_prompt(task: Any, item: Item) -> str:
    # Qwen2-Audio was not trained on Qwen-Audio's tags: given them, it reads them as plain text.
    natural = getattr(task, "qwen2_prompt", None)
    prompt = natural(item) if natural is not None else None
    if prompt is None:
        why = ("Qwen2-Audio has no time tokens, so it cannot give word timestamps" if task.kind == "srwt" else
               "the task defines no qwen2_prompt")
        raise UnsupportedTaskError(f"task {task.name!r} ({task.kind}) has no Qwen2-Audio prompt: {why}. "
                                   "Evaluate it with a Qwen-Audio model")
    return QWEN2_AUDIO_PREFIX + prompt


def _text(prompt: Any) -> str:
    return prompt if isinstance(prompt, str) else prompt.render()


# --- generation ------------------------------------------------------------------------------

def _generation(g: Any) -> dict[str, Any]:
    # The official scripts decode with the tags kept and strip (QWEN_AUDIO.md §3); scorers parse that.
    return {"output": g.text.strip(), "n_tokens": len(g.ids), "stopped": g.stop_token is not None}


def _check_batch(model: Any, batch: list[int], inputs: dict[int, Any], batched: list[Any],
                 items: list[Item], max_new_tokens: int) -> dict[str, Any]:
    differ = []
    for i, together in zip(batch, batched):
        alone = model.generate(inputs[i], max_new_tokens=max_new_tokens)
        if alone.ids != together.ids or alone.text != together.text:
            differ.append(f"{items[i].id}: batched {together.text!r} vs alone {alone.text!r}")
    if differ:
        raise BatchMismatchError(
            f"batched generation (batch of {len(batch)}) differs from one item at a time for {len(differ)} of "
            f"{len(batch)} items — {'; '.join(differ[:5])}. Padding changes this model's outputs (the official "
            "batched scripts lost most of their ClothoAQA and MELD accuracy this way, QwenLM/Qwen-Audio#43): "
            "rerun with batch_size=1 (--batch-size 1), or fix the model's padded batch")
    return {"status": "passed", "items": len(batch)}


def _record(index: int, item: Item, prompt: str, key: str, gen: dict[str, Any], task: Any) -> dict[str, Any]:
    return {"index": index, "id": item.id, "audio": str(item.audio), "prompt": prompt, "output": gen["output"],
            "reference": item.reference, "score": task.score_item(gen["output"], item), "key": key,
            "n_tokens": gen["n_tokens"], "stopped": gen["stopped"]}


def _audio_seconds(path: Path) -> float:
    """The clip's duration from its header (no decoding), only to sort a window; a format soundfile
    cannot read (MELD's mp4) falls back to its size, as the rough proxy of 16 kHz 16-bit."""
    try:
        info = soundfile.info(str(path))
        return info.frames / info.samplerate
    except (RuntimeError, TypeError, ValueError, ZeroDivisionError):   # soundfile.LibsndfileError is a RuntimeError
        return Path(path).stat().st_size / 32000


def _plan(pending: list[int], items: list[Item], prompts: dict[int, Any],
          options: RunOptions) -> list[tuple[list[int], list[list[int]]]]:
    """(window in item order, its batches): within a window, shortest audio (then prompt) first, so
    that a batch pads little; `sorted` is stable, so ties keep item order."""
    plan = []
    for start in range(0, len(pending), options.window_size):
        window = pending[start:start + options.window_size]
        order = sorted(window, key=lambda i: (_audio_seconds(items[i].audio), len(_text(prompts[i]))))
        plan.append((window, [order[b:b + options.batch_size] for b in range(0, len(order), options.batch_size)]))
    return plan


def _run_shard(model: Any, task: Any, items: list[Item], prompts: dict[int, Any], run: _RankRun,
               cache: dict[str, dict[str, Any]], path: Path, options: RunOptions, max_new_tokens: int,
               shard: Shard) -> None:
    """Generate this rank's missing items batch by batch, appending each window's records to `path`."""
    pending, seen = [], set()
    for i in sorted(run.keys):
        key = run.keys[i]
        if key in cache:
            run.reused += 1
        elif key in seen:
            run.shared += 1
        else:
            seen.add(key)
            pending.append(i)
    if options.batch_size == 1:
        run.batch_check = {"status": "skipped: batch size 1"}
    check_due = options.check_batch and options.batch_size > 1
    if not options.check_batch:
        run.batch_check = {"status": "off"}
    batches = [(window, batch, b == len(plan) - 1)
               for window, plan in _plan(pending, items, prompts, options) for b, batch in enumerate(plan)]

    def build(batch: list[int]) -> list[Any]:
        return [model.inputs(prompts[i], audio=items[i].audio) for i in batch]

    from tqdm.auto import tqdm
    bar = tqdm(total=len(pending), desc=task.name + (f" (rank 0 of {shard.world_size})" if shard.distributed else ""),
               unit="item",
               disable=not options.progress or not shard.is_main, dynamic_ncols=True)
    started = time.perf_counter()
    # One batch of inputs (audio decoding, log-mel, tokens) is built in a thread while the model
    # generates the previous one: the CPU work then hides behind a GPU's, or uses a second core.
    with RecordWriter(path) as writer, bar, ThreadPoolExecutor(1, thread_name_prefix="eval-inputs") as pool:
        upcoming = pool.submit(build, batches[0][1]) if batches else None
        fresh: dict[int, dict[str, Any]] = {}
        for k, (window, batch, closes_window) in enumerate(batches):
            inputs = upcoming.result()
            if k + 1 < len(batches):
                upcoming = pool.submit(build, batches[k + 1][1])
            generated = model.generate_batch(inputs, max_new_tokens=max_new_tokens)
            if check_due and len(batch) > 1:
                run.batch_check = {**_check_batch(model, batch, dict(zip(batch, inputs)), generated, items,
                                                  max_new_tokens), "batch_size": options.batch_size}
                check_due = False
            fresh.update((i, _generation(g)) for i, g in zip(batch, generated))
            if closes_window:   # records in item order, flushed: a kill loses at most this window
                writer.append(_record(i, items[i], _text(prompts[i]), run.keys[i], fresh[i], task) for i in window)
                for i in window:
                    cache[run.keys[i]] = fresh.pop(i)
                run.generated += len(window)
                bar.update(len(window))
    if check_due and pending:
        run.batch_check = {"status": "skipped: no batch of two or more items to compare"}
    run.seconds = time.perf_counter() - started


# --- the run ---------------------------------------------------------------------------------

def evaluate(model: Any, task: Any, data: str | Path | Sequence[Item], out: str | Path, *,
             limit: int | None = None, batch_size: int = 8, max_new_tokens: int | None = None,
             progress: bool = True, check_batch: bool = True, window: int | None = None) -> EvalResult:
    """Evaluate `model` (an `AudioLM`) on `task` (a name from `tasks.TASKS`, or a Task) over the
    dataset folder `data` (or a list of Items), writing records and summary.json into `out`.

    Resumable: rerun the same call after an interruption and only the missing items are generated.
    Under torchrun / accelerate each process runs its share (`sharding`); every rank returns the
    merged result."""
    options = RunOptions(limit=limit, batch_size=batch_size, max_new_tokens=max_new_tokens, progress=progress,
                         check_batch=check_batch, window=window)
    started = time.perf_counter()
    task = _resolve_task(task)
    shard = sharding.setup()
    out = Path(out).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    items = read_items(task, data, options.limit)
    max_new = options.max_new_tokens or task.max_new_tokens
    identity = model_identity(model)
    mine = shard.indices(len(items))
    prompts = {i: item_prompt(model, task, items[i]) for i in mine}
    keys = {i: item_key(identity["hash"], _text(prompts[i]), audio_hash(items[i].audio), max_new) for i in mine}
    run = _RankRun(rank=shard.rank, keys=keys)
    cache = load_cache(out, shard.records_name)
    _run_shard(model, task, items, prompts, run, cache, out / shard.records_name, options, max_new, shard)
    runs: list[_RankRun] = sharding.gather(shard, run)   # also a barrier: every rank file is closed
    if not shard.distributed:
        return _finish(model, task, items, identity, runs, out, options, max_new, shard, data,
                       time.perf_counter() - started)
    # Rank 0 merges and scores while the others wait; they learn whether it worked (rather than
    # waiting at a barrier rank 0 never reaches), then read the merged result.
    if shard.is_main:
        try:
            result = _finish(model, task, items, identity, runs, out, options, max_new, shard, data,
                             time.perf_counter() - started)
        except BaseException as error:
            sharding.broadcast(shard, f"{type(error).__name__}: {error}")
            raise
    failure = sharding.broadcast(shard, None)
    if failure is not None:
        raise RuntimeError(f"rank 0 failed to merge and score the records: {failure}")
    return result if shard.is_main else EvalResult.load(out)


def _finish(model: Any, task: Any, items: list[Item], identity: dict[str, Any], runs: list[_RankRun], out: Path,
            options: RunOptions, max_new: int, shard: Shard, data: Any, seconds: float) -> EvalResult:
    """Rank 0: merge every rank's records in item order, score, write records.jsonl and summary.json."""
    keys = {i: k for run in runs for i, k in run.keys.items()}
    cache = load_cache(out, "records.jsonl") if shard.distributed else \
        load_cache(out, shard.records_name)
    missing = [items[i].id for i in range(len(items)) if keys.get(i) not in cache]
    if missing:
        raise RuntimeError(f"{len(missing)} item(s) have no record after every rank finished (first: {missing[:3]}): "
                           "a rank's records file is missing from --out; is --out on a filesystem every node sees?")
    prompts = [_text(item_prompt(model, task, item)) for item in items]
    records = [plain(_record(i, item, prompts[i], keys[i], cache[keys[i]], task)) for i, item in enumerate(items)]
    _write_final(out, records)
    metrics = list(task.score([r["output"] for r in records], items))
    summary = _summary(model, task, items, identity, runs, records, metrics, options, max_new, shard, data, seconds)
    summary_file = out / "summary.json"
    temporary = summary_file.with_name(".summary.json.tmp")
    temporary.write_text(json.dumps(plain(summary), indent=2, ensure_ascii=False) + "\n")
    temporary.replace(summary_file)
    return EvalResult.from_summary(plain(summary), tuple(records), out)


def _write_final(out: Path, records: list[dict[str, Any]]) -> None:
    """records.jsonl = exactly this run's items in item order; records it held for other keys (an
    earlier run with another model or limit) move to records.unused.jsonl, still found by key."""
    final = out / "records.jsonl"
    before = read_records(final, quiet=True)
    if before == records:
        return
    wanted = {r["key"] for r in records}
    unused_file = out / "records.unused.jsonl"
    kept = {r["key"] for r in read_records(unused_file, repair=True)}
    extra = [r for r in before if r["key"] not in wanted and r["key"] not in kept]
    if extra:
        with RecordWriter(unused_file) as writer:
            writer.append(extra)
    write_records(final, records)


def _summary(model: Any, task: Any, items: list[Item], identity: dict[str, Any], runs: list[_RankRun],
             records: list[dict[str, Any]], metrics: list[Any], options: RunOptions, max_new: int, shard: Shard,
             data: Any, seconds: float) -> dict[str, Any]:
    generated = sum(r.generated for r in runs)
    busiest = max(r.seconds for r in runs)
    checks = [r.batch_check for r in runs]
    passed = [c for c in checks if c["status"] == "passed"]
    check = ({"status": "passed", "items": sum(c["items"] for c in passed), "ranks": len(passed),
              "batch_size": options.batch_size} if passed else {**checks[0]})
    try:
        described = model.describe()
    except (NotImplementedError, AttributeError, StopIteration):
        described = {}
    return {
        "task": {"name": task.name, "kind": task.kind, "dataset": task.dataset},
        "model": {"family": getattr(model, "family", "?"), "source": model_source(model), "identity": identity,
                  "describe": described},
        "data": str(data) if isinstance(data, (str, Path)) else f"{len(items)} items given in memory",
        "settings": {**asdict(options), "max_new_tokens": max_new},
        "counts": {"items": len(items), "generated": generated, "reused": sum(r.reused for r in runs),
                   "shared": sum(r.shared for r in runs), "ranks": shard.world_size,
                   "stopped": sum(r["stopped"] for r in records),
                   "truncated": sum(not r["stopped"] for r in records)},
        "timing": {"seconds": seconds, "generate_seconds": busiest,
                   "items_per_second": generated / busiest if busiest > 0 else 0.0,
                   "per_rank": [{"rank": r.rank, "generated": r.generated, "seconds": r.seconds} for r in runs]},
        "batch_check": check,
        "metrics": [asdict(m) for m in metrics],
        "paper": dict(getattr(task, "paper", {}) or {}),
        "previous_best": {k: list(v) for k, v in (getattr(task, "previous_best", {}) or {}).items()},
        "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
