"""The embedded default: a nano Qwen-Audio trained in miniature, shipped inside the package.

Same classes as Qwen-Audio v1 (`QwenAudio`, `AudioEncoder`, transformers' `Qwen2ForCausalLM`,
`QwenAudioTokenizer`), same official checkpoint layout, same hierarchical tags — only smaller:

- audio encoder: Whisper tiny.en's conv stem and first 2 blocks (width 384; deeper blocks lose the
  pitch that note analysis needs, recipes/train_nano.py), then the Qwen-Audio pool,
  `ln_post`, `proj` (384 → 192) and learned audio bos/eos;
- LLM: Qwen2 with hidden 192, 4 layers, 6 heads, MLP 384 a branch, untied embeddings;
- tokenizer: a byte-level BPE learned on the synthetic corpus's texts (at most 2,048 ranks: the
  corpus's small vocabulary runs out of pairs seen twice at 1,675), then the full Qwen-Audio special
  vocabulary (3,522 tags, identical strings, same order), numbered after the ranks: `<|endoftext|>`
  is 1675 and `<audio>` 5195 instead of 151643 and 155163 (read them off the tokenizer).

Trained by `recipes/train_nano.py` on the corpus of `workbench.synth` (multitask pretraining with
tags, then ChatML fine-tuning); its measured numbers are in `assets/nano/eval.json`.

    import workbench
    model = workbench.load("nano")
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from workbench.errors import CheckpointFileNotFoundError
from workbench.models.qwen_audio.model import load_qwen_audio
from workbench.models.qwen_audio.official_layout import official_config

__all__ = ["GATES_V2", "MAX_RANKS", "NANO_DIR", "NANO_SIZES", "NANO_V2_DIR", "NANO_VERSIONS", "N_SPECIAL",
           "WHISPER_SOURCE", "load_nano", "nano_config", "nano_evaluation", "nano_gate_table"]

NANO_DIR = Path(__file__).resolve().parents[2] / "assets" / "nano"   # workbench/assets/nano
NANO_V2_DIR = NANO_DIR.with_name("nano_v2")   # nano v2 (recipes/v2): real text, many voices, a layer-mix encoder
NANO_VERSIONS = {"nano": NANO_DIR, "nano-v2": NANO_V2_DIR}   # packaged name → folder
MAX_RANKS = 2048             # BPE ranks asked of the tokenizer trainer (it stops early when pairs run out)
N_SPECIAL = 3522             # every Qwen-Audio tag, `<|endoftext|>` … `</audio>`
WHISPER_SOURCE = "whisper-tiny.en"   # the encoder's initialisation (workbench.models.registry name)
NANO_SIZES = dict(hidden=192, layers=4, heads=6, intermediate=768,   # config value; the MLP uses half
                  audio_state=384, audio_layers=2, audio_heads=6)


def nano_config(n_ranks: int) -> dict:
    """config.json of the nano model: the published keys (`official_config`) at the nano sizes, with
    the vocabulary and `audio_start_id` of a tokenizer with `n_ranks` BPE ranks."""
    vocab = n_ranks + N_SPECIAL
    config = official_config(**NANO_SIZES, vocab_size=vocab)
    config["audio"]["audio_start_id"] = vocab - 2   # `<audio>`, the second to last special token
    # The nano prompts stay far below 2048 positions: no dynamic-NTK or logn scaling to mimic.
    config.update(use_dynamic_ntk=False, use_logn_attn=False, max_position_embeddings=2048,
                  torch_dtype="float16")
    return config


def load_nano(path: str | Path | None = None, **options: Any):
    """The packaged nano Qwen-Audio (or a nano checkpoint at `path`, e.g. NANO_V2_DIR), as a `QwenAudio`.

    Options are those of `load_qwen_audio` (dtype, device, attn, audio_batching, …); float32 on CPU
    by default, computed from the float16 weights on disk."""
    directory = NANO_DIR if path is None else Path(path)
    if directory == NANO_V2_DIR and not (directory / "model.safetensors").is_file():
        raise CheckpointFileNotFoundError(
            f"nano v2 is not shipped in this version ({directory} is empty): it has not yet passed its gates "
            "(recipes/v2/README.md). Train it with `python recipes/v2/run_v2.py --root runs/v2`, ship it with "
            "`python recipes/v2/package_v2.py --root runs/v2`, or pass a trained run's directory to workbench.load")
    if not (directory / "model.safetensors").is_file():
        raise CheckpointFileNotFoundError(
            f"{directory} holds no model.safetensors: the nano checkpoint is missing from the package; "
            "reinstall workbench, or train one with `python recipes/train_nano.py` and pass its directory")
    return load_qwen_audio(directory, **options)


# Nano v2's gates (issue #14), measured by recipes/v2/eval_nano_v2.py into eval.json: key → (op, bound).
GATES_V2 = {"wer_en_heldout": ("≤", 0.10), "wer_real_speech": ("≤", 0.60), "routing": ("≥", 0.98),
            "mna_pitch_within_1": ("≥", 0.95), "srwt_order": ("≥", 0.95), "srwt_start_shift_ms": ("≤", 120.0),
            "noise_no_transcript": ("≥", 0.95), "checkpoint_mb": ("≤", 40.0)}


def nano_gate_table(result: dict) -> pd.DataFrame:
    """eval.json's gates as a table: gate, measured value, bound, passed (a missing measure fails)."""
    rows = []
    for gate, (op, bound) in GATES_V2.items():
        value = result.get(gate)
        measured = isinstance(value, (int, float)) and value == value
        passed = measured and (value <= bound if op == "≤" else value >= bound)
        rows.append({"gate": gate, "measured": value if measured else None, "bound": f"{op} {bound:g}",
                     "passed": bool(passed)})
    return pd.DataFrame(rows)


def nano_evaluation(path: str | Path | None = None) -> dict:
    """The numbers measured on the held-out test split when the checkpoint was trained (eval.json)."""
    file = (NANO_DIR if path is None else Path(path)) / "eval.json"
    if not file.is_file():
        raise FileNotFoundError(f"{file} not found: run `python recipes/eval_nano.py` to measure the checkpoint")
    try:
        return json.loads(file.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{file} is not valid JSON ({error.msg} at line {error.lineno}): re-run "
                         "`python recipes/eval_nano.py` to write it again") from None
