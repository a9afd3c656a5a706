"""Measure nano v2 checkpoints against the gates of issue #14, and stages against each other.

    python recipes/v2/eval_nano_v2.py --corpus runs/v2/corpus \
        --models stage1=runs/v2/work/ckpt-stage1 stage2=runs/v2/work/ckpt-stage2 joint=runs/v2/work/ckpt-joint \
        --table runs/v2/STAGES.md

Writes eval.json into each model folder and a markdown table (one column per model). Every test item's
content is unseen in training and its voice is held out (v2_items: flite, festival's ked, espeak-ng
f3/m6). Gates:

| gate | measure |
|---|---|
| English WER ≤ 10 % | test-split English ASR (held-out voices/engines), words lowercased without punctuation |
| real speech WER ≤ 60 % | recipes/v2/real_speech.py (human recordings, never trained on) |
| routing ≥ 0.98 | the output has the form the tags ask for (recipes/eval_nano.py `has_form`), tag tasks |
| MNA pitch ±1 ≥ 0.95 | NSynth-style notes, pitch within one semitone |
| SRWT order ≥ 0.95, shift ≤ 120 ms | times never decrease; mean |start − reference start| of matched words |
| noise → no transcript ≥ 0.95 | noise-only clips under the English ASR prompt give an empty answer |
| checkpoint ≤ 40 MB | model.safetensors, float16 |
"""
from __future__ import annotations

import argparse
import difflib
import json
import re
import sys
import time
from collections import defaultdict
from pathlib import Path

import jiwer
import numpy as np
import sacrebleu
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from eval_nano import LABEL_TASKS, has_form, label_sets, plain  # noqa: E402
from model_v2 import generate, load_v2  # noqa: E402
from nano_data import read_clip  # noqa: E402
from real_speech import real_speech_clips  # noqa: E402

from workbench.models.qwen_audio.nano import GATES_V2  # noqa: E402
from workbench.synth import read_manifest, task_prompt  # noqa: E402
from workbench.synth.text import transcript_of  # noqa: E402

_TIME = re.compile(r"<\|(\d+\.\d\d)\|>")
_NOTE = re.compile(r"<\|pitch\|><\|midi_pitch_(\d+)\|>")
GATES = GATES_V2   # one definition, in the package (nano_gate_table reads it too)


def words_of(text: str) -> str:
    return transcript_of(plain(text))


def wer(references: list[str], outputs: list[str]) -> float:
    refs = [words_of(r) for r in references]
    return float(jiwer.wer(refs, [words_of(o) or "∅" for o in outputs])) if refs else float("nan")


def srwt_words(output: str) -> list[tuple[str, float, float]]:
    """(word, start, end) of an SRWT answer: the text between two consecutive time tags is a word
    (or several, which then share the span); `<|sil|>` spans are silence."""
    out = []
    tags = list(_TIME.finditer(output))
    for left, right in zip(tags, tags[1:]):
        chunk = output[left.end(): right.start()]
        if "<|sil|>" in chunk:
            continue
        for word in transcript_of(chunk).split():
            out.append((word, float(left.group(1)), float(right.group(1))))
    return out


def srwt_scores(rows: list[dict], outputs: list[str]) -> dict:
    ordered, shifts = [], []
    for row, output in zip(rows, outputs):
        times = [float(t) for t in _TIME.findall(output)]
        ordered.append(len(times) >= 2 and all(a <= b for a, b in zip(times, times[1:])))
        hyp, ref = srwt_words(output), [(w["word"], w["start"]) for w in row["words"]]
        matcher = difflib.SequenceMatcher(a=[w for w, _ in ref], b=[w for w, _, _ in hyp], autojunk=False)
        for block in matcher.get_matching_blocks():
            shifts += [abs(ref[block.a + k][1] - hyp[block.b + k][1]) for k in range(block.size)]
    return {"srwt_order": float(np.mean(ordered)) if ordered else float("nan"),
            "srwt_start_shift_ms": 1000 * float(np.mean(shifts)) if shifts else float("nan"),
            "srwt_matched_words": len(shifts)}


def run(model, mix, prompt: str, audio_paths: list[str], max_new_tokens: int) -> str:
    features = [mix.layer_features(read_clip(p)) for p in audio_paths]
    return generate(model, mix, prompt, features, max_new_tokens)


def prompt_of(row: dict) -> str:
    return row["prompt"] if row["task"] == "chat" else f"<audio>{row['audio']}</audio>{row['prompt']}"


def evaluate(directory: Path, corpus: Path, per_kind: dict[str, int], default: int) -> dict:
    model, mix = load_v2(directory)
    train, test = read_manifest(corpus / "train.jsonl"), read_manifest(corpus / "test.jsonl")
    chosen: dict[str, list[dict]] = defaultdict(list)
    for r in test:
        if len(chosen[r["kind"]]) < per_kind.get(r["kind"], default):
            chosen[r["kind"]].append(r)
    chosen = dict(chosen)  # no empty kinds appear on lookup below
    outputs = {}
    for kind, rows in chosen.items():
        limit = 160 if rows[0]["task"] == "srwt" else 80
        outputs[kind] = [run(model, mix, prompt_of(r), r.get("audio_paths", [r["audio_path"]]), limit) for r in rows]
    labels = label_sets(train)
    result: dict = {"model": str(directory), "items": {k: len(v) for k, v in chosen.items()}}
    size = (directory / "model.safetensors").stat().st_size
    result["checkpoint_mb"] = size / 1e6
    result["layer_weights"] = [round(w, 3) for w in mix.layer_weights().tolist()]
    asr = [(r, o) for r, o in zip(chosen.get("asr_en", []), outputs.get("asr_en", []))]
    result["wer_en_heldout"] = wer([r["reference"] for r, _ in asr], [o for _, o in asr])
    by_engine = defaultdict(list)
    for r, o in asr:
        engine, name = r["voice"].split(":")
        by_engine[engine if engine == "espeak-ng" else f"{engine}:{name}"].append((r, o))
    result["wer_en_by_voice"] = {k: wer([r["reference"] for r, _ in v], [o for _, o in v])
                                 for k, v in sorted(by_engine.items())}
    clean = [(r, o) for r, o in asr if r["augmentation"].startswith(("clean", "gain"))]
    result["wer_en_clean"] = wer([r["reference"] for r, _ in clean], [o for _, o in clean])
    other = [(r, o) for r, o in zip(chosen.get("asr_other", []), outputs.get("asr_other", []))]
    for language in sorted({r["language"] for r, _ in other}):
        pairs = [(r, o) for r, o in other if r["language"] == language]
        refs, hyps = [r["reference"] for r, _ in pairs], [plain(o) for _, o in pairs]
        if language == "zh":  # characters, spaces removed
            refs, hyps = [x.replace(" ", "") for x in refs], [h.replace(" ", "") for h in hyps]
        result[f"cer_{language}"] = float(jiwer.cer(refs, [h or "∅" for h in hyps]))
    real = real_speech_clips()
    prompt = f"<audio>clip</audio>{task_prompt('asr', lang='en')}"
    real_out = [generate(model, mix, prompt, [mix.layer_features(c.audio)], 80) for c in real]
    result["wer_real_speech"] = wer([c.transcript for c in real], real_out)
    result["real_speech"] = {"clips": len(real), "words": sum(c.words for c in real),
                             "examples": [{"id": c.id, "reference": c.transcript, "output": o}
                                          for c, o in zip(real, real_out)]}
    routed = [has_form(r["task"], o, labels) for kind, rows in chosen.items() if kind not in ("noise", "chat", "chat_real")
              for r, o in zip(rows, outputs[kind])]
    result["routing"] = float(np.mean(routed)) if routed else float("nan")
    result["routing_per_kind"] = {k: float(np.mean([has_form(r["task"], o, labels) for r, o in zip(rows, outputs[k])]))
                                  for k, rows in chosen.items() if k not in ("noise", "chat", "chat_real")}
    if "noise" in chosen:
        result["noise_no_transcript"] = float(np.mean([not plain(o) for o in outputs["noise"]]))
    if "mna" in chosen:
        pitch = [int(m.group(1)) if (m := _NOTE.match(o)) else -100 for o in outputs["mna"]]
        result["mna_pitch_within_1"] = float(np.mean([abs(p - r["pitch"]) <= 1 for p, r in zip(pitch, chosen["mna"])]))
    srwt_rows = chosen.get("srwt_en", [])
    result |= srwt_scores(srwt_rows, outputs.get("srwt_en", []))
    for kind in LABEL_TASKS:
        if kind in chosen:
            hits = [plain(o) == r["reference"] for r, o in zip(chosen[kind], outputs[kind])]
            result[f"{kind}_accuracy"] = float(np.mean(hits))
    for kind in ("s2tt", "aac", "chat", "chat_real"):
        if kind in chosen:
            result[f"{kind}_bleu"] = sacrebleu.corpus_bleu([plain(o) for o in outputs[kind]],
                                                           [[plain(r["reference"]) for r in chosen[kind]]]).score
    result["gates"] = {name: bool(result.get(name) == result.get(name) and
                                  (result[name] <= bound if op == "≤" else result[name] >= bound))
                       for name, (op, bound) in GATES.items() if name in result}
    result["examples"] = {k: [{"reference": r["reference"], "output": o} for r, o in list(zip(rows, outputs[k]))[:3]]
                          for k, rows in chosen.items()}
    return result


def table(results: dict[str, dict]) -> str:
    names = list(results)
    lines = ["| measure | gate | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
    keys = [*GATES, "wer_en_clean", "cer_de", "cer_fr", "cer_es", "cer_zh", "asc_accuracy", "ser_accuracy",
            "vsc_accuracy", "aqa_accuracy", "s2tt_bleu", "chat_real_bleu"]
    for key in keys:
        if any(key in r for r in results.values()):
            gate = f"{GATES[key][0]} {GATES[key][1]}" if key in GATES else "—"
            cells = [f"{results[n][key]:.3f}" if isinstance(results[n].get(key), float) else "—" for n in names]
            lines.append(f"| {key} | {gate} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, required=True)
    parser.add_argument("--models", nargs="+", required=True, metavar="NAME=DIR")
    parser.add_argument("--per-kind", type=int, default=40, help="test items per kind")
    parser.add_argument("--asr-items", type=int, default=200, help="English ASR test items")
    parser.add_argument("--table", type=Path, help="write the comparison table (markdown) here")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    results = {}
    for spec in args.models:
        name, _, folder = spec.partition("=")
        began = time.perf_counter()
        results[name] = evaluate(Path(folder), args.corpus, {"asr_en": args.asr_items, "mna": 2 * args.per_kind},
                                 args.per_kind)
        results[name]["seconds"] = round(time.perf_counter() - began, 1)
        (Path(folder) / "eval.json").write_text(json.dumps(results[name], indent=1, ensure_ascii=False) + "\n")
    text = table(results)
    print(text)
    if args.table:
        args.table.write_text(text)


if __name__ == "__main__":
    main()
