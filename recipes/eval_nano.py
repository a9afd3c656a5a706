"""Measure a nano checkpoint on the held-out test split: the gates of the nano recipe.

    python recipes/eval_nano.py --corpus corpus --model workbench/assets/nano [--per-task 60]

Writes `eval.json` next to the model. Everything runs through the shipped path (`load_nano` →
`generate_batch`, greedy, float16 weights computed in float32), on test items whose content
(sentences, mixtures, scenes, notes) never occurs in training.

- routing: the share of items whose output has the form the tags ask for — a transcript (plain
  lowercase text) for ASR, a sentence for S2TT and AAC (。-ended for Chinese), a label of the task's own label set for
  ASC / SER / VSC / AQA, a note analysis for MNA, words between time tags for SRWT (whether the
  times never decrease is reported apart);
- ASR: character error rate on the English items (official normalisation: tags stripped,
  lowercase, spaces collapsed), and per language;
- S2TT: BLEU (sacrebleu) and the share of outputs in the asked target language;
- classification: accuracy against chance (uniform over the label set, and the majority class);
- MNA: pitch within ±1 semitone, exact pitch, instrument and velocity accuracy;
- tag swaps: the same English speech under the ASR, S2TT, SER and SRWT tags (does the output's form
  follow the tag?), and under AAC, ASC and MNA, which the corpus never pairs with speech (reported
  apart); and English speech under each translation target (does the output's language follow?).
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import jiwer
import numpy as np
import sacrebleu
import torch

from workbench.models.qwen_audio.nano import load_nano
from workbench.synth import read_manifest, task_prompt

LABEL_TASKS = ("asc", "ser", "vsc", "aqa")
_TAG = re.compile(r"<\|[^<>|]*\|>")
_TIME = re.compile(r"<\|\d+\.\d\d\|>")
_NOTE = re.compile(r"<\|pitch\|><\|midi_pitch_(\d+)\|><\|velocity\|><\|midi_velocity_(\d+)\|><\|instrument\|>([^<]*)")
_CJK = re.compile(r"[\u4e00-\u9fff]")


def plain(text: str) -> str:
    """Tags stripped, spaces collapsed, no space before punctuation (the official ASR clean-up)."""
    text = re.sub(r"\s+", " ", _TAG.sub("", text)).strip()
    return re.sub(r" ([!,.?;:])", r"\1", text)


def label_sets(train: list[dict]) -> dict[str, set[str]]:
    return {task: {r["reference"] for r in train if r["task"] == task} for task in LABEL_TASKS}


def has_form(task: str, output: str, labels: dict[str, set[str]]) -> bool:
    """Whether `output` has the form the tags of `task` ask for."""
    text = plain(output)
    if task == "mna":
        return _NOTE.match(output) is not None
    if task == "srwt":   # words between time tags (whether the times are right is scored apart)
        other_tags = {t for t in _TAG.findall(output) if not _TIME.fullmatch(t)} - {"<|sil|>"}
        return len(_TIME.findall(output)) >= 2 and bool(text) and not other_tags
    if task in LABEL_TASKS:
        return text in labels[task]
    if _TAG.search(output) or not text:
        return False
    sentence = (text[0].isupper() or bool(_CJK.match(text))) and text[-1] in ".!?。"
    if task == "asr":
        return not sentence and text == text.lower()
    return sentence   # s2tt, aac


def language_words(train: list[dict]) -> dict[str, set[str]]:
    """Words seen per language (ASR transcripts and translation targets) for language identification."""
    words: dict[str, set[str]] = defaultdict(set)
    for r in train:
        if r["task"] == "asr":
            words[r["language"]] |= set(plain(r["reference"]).lower().split())
        elif r["task"] == "s2tt":
            words[r["target_language"]] |= set(re.findall(r"\w+", r["reference"].lower()))
    shared = set.intersection(*words.values()) if words else set()
    return {lang: w - shared for lang, w in words.items()}


def language_of(text: str, words: dict[str, set[str]]) -> str:
    if _CJK.search(text):
        return "zh"
    tokens = re.findall(r"\w+", plain(text).lower())
    scores = {lang: sum(t in w for t in tokens) for lang, w in words.items() if lang != "zh"}
    best = max(scores, key=scores.get) if scores else "?"
    return best if scores.get(best) else "?"


def cer(references: list[str], outputs: list[str], chars: bool = False) -> float:
    refs = [plain(r).lower() for r in references]
    hyps = [plain(o).lower() for o in outputs]
    if chars:   # Chinese: every character a unit, spaces removed
        refs, hyps = [r.replace(" ", "") for r in refs], [h.replace(" ", "") for h in hyps]
    return float(jiwer.cer(refs, [h if h else "∅" for h in hyps]))


def generate(model, prompts: list[str], audio_dir: Path, batch: int = 16, max_new_tokens: int = 64) -> list[str]:
    outputs = []
    for start in range(0, len(prompts), batch):
        outputs += [g.text for g in model.generate_batch(prompts[start:start + batch], audio_dir=audio_dir,
                                                         max_new_tokens=max_new_tokens)]
    return outputs


def prompt_of(row: dict, tags: str | None = None) -> str:
    if row["task"] == "chat":
        return row["prompt"]
    return f"<audio>{row['audio']}</audio>{row['prompt'] if tags is None else tags}"


def evaluate(model, corpus: Path, per_task: int | None = None, swaps: int = 20) -> dict:
    train, test = read_manifest(corpus / "train.jsonl"), read_manifest(corpus / "test.jsonl")
    by_task: dict[str, list[dict]] = defaultdict(list)
    for r in test:
        if per_task is None or len(by_task[r["task"]]) < per_task:
            by_task[r["task"]].append(r)
    labels, words = label_sets(train), language_words(train)
    outputs = {task: generate(model, [prompt_of(r) for r in rows], corpus, max_new_tokens=96 if task == "srwt" else 64)
               for task, rows in by_task.items()}
    result: dict = {"items": {t: len(rows) for t, rows in by_task.items()}, "tasks": {}}
    routed = [has_form(t, o, labels) for t, rows in by_task.items() if t != "chat" for o in outputs[t]]
    result["routing"] = {"share": float(np.mean(routed)), "items": len(routed),
                         "per_task": {t: float(np.mean([has_form(t, o, labels) for o in outputs[t]]))
                                      for t in by_task if t != "chat"}}
    train_counts = {t: Counter(r["reference"] for r in train if r["task"] == t) for t in LABEL_TASKS}
    for task, rows in by_task.items():
        outs, refs = outputs[task], [r["reference"] for r in rows]
        scores: dict = {}
        if task == "asr":
            for lang in sorted({r["language"] for r in rows}):
                pairs = [(ref, o) for r, ref, o in zip(rows, refs, outs) if r["language"] == lang]
                scores[f"cer_{lang}"] = cer(*zip(*pairs), chars=lang == "zh")
                scores[f"items_{lang}"] = len(pairs)
        elif task == "s2tt":
            scores["bleu"] = sacrebleu.corpus_bleu(outs, [refs]).score
            scores["target_language_share"] = float(np.mean(
                [language_of(o, words) == r["target_language"] for r, o in zip(rows, outs)]))
        elif task in LABEL_TASKS:
            counts = train_counts[task]
            scores["accuracy"] = float(np.mean([plain(o) == ref for o, ref in zip(outs, refs)]))
            scores["chance_uniform"] = 1 / len(counts)
            scores["chance_majority"] = float(np.mean([ref == counts.most_common(1)[0][0] for ref in refs]))
        elif task == "mna":
            parsed = [_NOTE.match(o) for o in outs]
            pitch = [int(m.group(1)) if m else -100 for m in parsed]
            scores["pitch_within_1"] = float(np.mean([abs(p - r["pitch"]) <= 1 for p, r in zip(pitch, rows)]))
            scores["pitch_exact"] = float(np.mean([p == r["pitch"] for p, r in zip(pitch, rows)]))
            scores["instrument_accuracy"] = float(np.mean(
                [bool(m) and m.group(3).strip() == r["instrument"] for m, r in zip(parsed, rows)]))
            scores["instrument_chance"] = 1 / len({r["instrument"] for r in train if r["task"] == "mna"})
            scores["velocity_accuracy"] = float(np.mean(
                [bool(m) and int(m.group(2)) == r["velocity"] for m, r in zip(parsed, rows)]))
        elif task == "srwt":
            scores["cer"] = cer(refs, outs, chars=True)
            times = [[float(t[2:-2]) for t in _TIME.findall(o)] for o in outs]
            scores["timestamps_non_decreasing"] = float(np.mean(
                [len(t) >= 2 and all(a <= b for a, b in zip(t, t[1:])) for t in times]))
        elif task in ("aac", "chat"):
            scores["exact_match"] = float(np.mean([plain(o) == plain(ref) for o, ref in zip(outs, refs)]))
            scores["bleu"] = sacrebleu.corpus_bleu([plain(o) for o in outs], [[plain(r) for r in refs]]).score
        scores["examples"] = [{"reference": ref, "output": o} for ref, o in list(zip(refs, outs))[:3]]
        result["tasks"][task] = scores
    result["tag_swap"] = _tag_swap(model, corpus, by_task, labels, swaps)
    result["language_swap"] = _language_swap(model, corpus, by_task, words, swaps)
    return result


# Task tags that ask something of speech (the swap's gate), and tags of tasks the corpus never
# pairs with speech (reported: what a tag the model never saw on such audio makes it say).
SPEECH_TAGS = ("asr", "s2tt", "ser", "srwt")
FOREIGN_TAGS = ("aac", "asc", "mna")


def _tag_swap(model, corpus: Path, by_task: dict, labels: dict, n: int) -> dict:
    """English speech under every task tag: does each output have the asked task's form?"""
    rows = [r for r in by_task["asr"] if r["language"] == "en"][:n]
    tags = {"asr": task_prompt("asr", lang="en"), "s2tt": task_prompt("s2tt", src="en", tgt="de"),
            "ser": task_prompt("ser"), "srwt": task_prompt("srwt", lang="en"),
            "aac": task_prompt("aac"), "asc": task_prompt("asc"), "mna": task_prompt("mna")}
    outs = {task: generate(model, [prompt_of(r, t) for r in rows], corpus,
                           max_new_tokens=96 if task == "srwt" else 64) for task, t in tags.items()}
    follows = {task: float(np.mean([has_form(task, o, labels) for o in outs[task]])) for task in tags}
    changed = float(np.mean([len({outs[t][i] for t in SPEECH_TAGS}) == len(SPEECH_TAGS) for i in range(len(rows))]))
    return {"items": len(rows), "form_follows_tag": {t: follows[t] for t in SPEECH_TAGS},
            "mean": float(np.mean([follows[t] for t in SPEECH_TAGS])), "all_outputs_differ": changed,
            "foreign_tags_form": {t: follows[t] for t in FOREIGN_TAGS},
            "example": {task: outs[task][0] for task in tags} if rows else {}}


def _language_swap(model, corpus: Path, by_task: dict, words: dict, n: int) -> dict:
    """English speech translated to each target: does the output's language follow the tag?"""
    rows = [r for r in by_task["s2tt"] if r["language"] == "en"][:n]
    targets = sorted({"de", "fr", "es", "zh"})
    hits, example = {}, {}
    for tgt in targets:
        outs = generate(model, [prompt_of(r, task_prompt("s2tt", src="en", tgt=tgt)) for r in rows], corpus)
        hits[tgt] = float(np.mean([language_of(o, words) == tgt for o in outs])) if rows else float("nan")
        example[tgt] = outs[0] if outs else ""
    return {"items": len(rows), "target_language_share": hits,
            "mean": float(np.mean(list(hits.values()))), "example": example}


# A fixed handful of held-out test items shipped with the model, for tests/test_nano.py (≤ 1 MB).
EVAL_CLIPS = {"asr": 4, "s2tt": 2, "aac": 1, "asc": 2, "ser": 2, "aqa": 2, "vsc": 2, "mna": 8, "srwt": 1}


def write_eval_clips(corpus: Path, out: Path) -> int:
    """Copy the first test items of each task (English speech for ASR and S2TT) into `out`, with a
    manifest and the label sets their scoring needs. Returns the bytes written."""
    train, test = read_manifest(corpus / "train.jsonl"), read_manifest(corpus / "test.jsonl")
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for task, count in EVAL_CLIPS.items():
        pool = [r for r in test if r["task"] == task and r.get("language", "en") == "en"]
        for r in pool[:count]:
            name = Path(r["audio"]).name
            (out / name).write_bytes(Path(r["audio_path"]).read_bytes())
            rows.append({k: v for k, v in r.items() if k not in ("audio_path", "content_keys")} | {"audio": name})
    (out / "manifest.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    labels = {task: sorted(v) for task, v in label_sets(train).items()}
    (out / "labels.json").write_text(json.dumps(labels, indent=1) + "\n")
    return sum(f.stat().st_size for f in out.iterdir())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, required=True)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--per-task", type=int, default=None, help="test items per task (default: all)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--clips", action="store_true", help="also ship a few test clips in MODEL/eval_clips")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    began = time.perf_counter()
    result = evaluate(load_nano(args.model), args.corpus, args.per_task)
    corpus_info = json.loads((args.corpus / "corpus.json").read_text())
    result["corpus"] = {"options": corpus_info["options"], "items": corpus_info["items"]}
    result["seconds"] = round(time.perf_counter() - began, 1)
    if args.clips:
        result["eval_clips_bytes"] = write_eval_clips(args.corpus, args.model / "eval_clips")
    (args.model / "eval.json").write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    json.dump({k: v for k, v in result.items() if k != "corpus"}, sys.stdout, indent=1, ensure_ascii=False)


if __name__ == "__main__":
    main()
