"""Ship a trained nano v2 inside the package: the checkpoint, its measurements, and a fixed subset of
held-out clips with the answers the recipe gave, so CI re-checks the shipped model on them.

    python recipes/v2/package_v2.py --root runs/v2                    # → workbench/assets/nano_v2

Writes OUT/{model.safetensors, config.json, …} (re-exported with the workbench's own writer, float16),
OUT/eval.json and OUT/STAGES.md (from the run), OUT/train_log.jsonl, and OUT/eval_clips/ (the clips,
and manifest.jsonl: each item's prompt, reference and `expected`, the recipe's greedy answer computed
from the cached-feature path). tests/test_nano_v2.py loads the model with `workbench.load("nano-v2")`,
answers the same prompts through the workbench's live encoder and checks they agree.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from eval_nano_v2 import prompt_of, run  # noqa: E402
from model_v2 import export, load_v2  # noqa: E402

from workbench.models.qwen_audio.nano import NANO_V2_DIR  # noqa: E402
from workbench.synth import read_manifest  # noqa: E402

# Test items shipped per kind: held-out voices for speech, ≤ ~1.5 MB of FLAC in all.
EVAL_CLIPS = {"asr_en": 8, "noise": 3, "srwt_en": 2, "mna": 6, "asr_other": 2, "s2tt": 1,
              "aac": 1, "asc": 1, "ser": 1, "vsc": 1, "aqa": 1}
KEEP = ("id", "task", "kind", "prompt", "reference", "voice", "engine", "augmentation", "language", "pitch", "words")


def write_eval_clips(model, mix, corpus: Path, out: Path) -> int:
    test = read_manifest(corpus / "test.jsonl")
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for kind, count in EVAL_CLIPS.items():
        for r in [r for r in test if r["kind"] == kind][:count]:
            name = Path(r["audio"]).name
            shutil.copyfile(r["audio_path"], out / name)
            limit = 160 if r["task"] == "srwt" else 80
            expected = run(model, mix, prompt_of(r), [r["audio_path"]], limit)
            rows.append({k: r[k] for k in KEEP if k in r} | {"audio": name, "max_new_tokens": limit,
                                                             "expected": expected})
    (out / "manifest.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return sum(f.stat().st_size for f in out.iterdir())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, required=True, help="the run_v2.py --root folder")
    parser.add_argument("--out", type=Path, default=NANO_V2_DIR)
    args = parser.parse_args(argv)
    source = args.root / "work" / "ckpt-stage2"   # the final stage, where eval_nano_v2 wrote eval.json
    if not (source / "eval.json").is_file():
        sys.exit(f"{source} has no eval.json: finish `python recipes/v2/run_v2.py --root {args.root}` first")
    model, mix = load_v2(source)
    if args.out.exists():
        shutil.rmtree(args.out)
    size = export(model, mix, source, args.out, source / "train_log.jsonl")
    shutil.copyfile(source / "eval.json", args.out / "eval.json")
    if (args.root / "STAGES.md").is_file():
        shutil.copyfile(args.root / "STAGES.md", args.out / "STAGES.md")
    clips = write_eval_clips(model, mix, args.root / "corpus", args.out / "eval_clips")
    print(f"packaged {source} → {args.out}: model {size / 1e6:.1f} MB, eval clips {clips / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
