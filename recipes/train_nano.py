"""Train the nano Qwen-Audio with the paper's recipe, in miniature, and write it in the official layout.

    python recipes/make_corpus.py --out corpus --per-task 600 --per-task-for mna=10000 asr=2000 \
        --seed 0 --workers 2                                              # 16,800 items, ~2 min
    python recipes/train_nano.py --corpus corpus --work runs/nano --out workbench/assets/nano \
        --steps 7000 800 --oversample asr=3 --threads 2                   # ~5 min features + ~38 min
    python recipes/eval_nano.py --corpus corpus --model workbench/assets/nano --clips

The recipe (Qwen-Audio, arXiv 2311.07919, §3):
1. tokenizer: a byte-level BPE (at most MAX_RANKS ranks) learned on the corpus texts (recipes/nano_bpe.py) plus every
   Qwen-Audio tag as a special token, numbered after the BPE ranks;
2. audio encoder initialised from Whisper (tiny.en: conv stem, positions, its first two blocks;
   its final LayerNorm initialises `ln_post`); `proj` and the audio bos/eos are new. Two blocks,
   not four: pitch fades with depth in Whisper's encoder (a probe on pooled frames told notes
   apart to ±1 semitone 0.99 / 0.96 / 0.93 / 0.89 / 0.80 of the time after the stem and blocks
   1–4), and note analysis needs it;
3. LLM: a small Qwen2 (sizes in workbench/models/qwen_audio/nano.py), randomly initialised;
4. stage 1, multitask pretraining: every tag task (ASR, S2TT, AAC, ASC, SER, AQA, VSC, MNA, SRWT),
   each with its hierarchical tag prompt;
5. stage 2, supervised fine-tuning: the ChatML chat items, mixed with tag items (one in two) so that
   the one shipped model keeps answering tag prompts too.
The loss counts the target tokens only (the reference and its stop token).

Speed trick (recipes/nano_data.py): the Whisper blocks are frozen and their pooled output is
computed once per clip; only ln_post, proj, bos/eos and the LLM train.

Partial-safe and resumable: the full training state is saved to `--work` every `--save-every`
seconds and at the end; `--resume` continues from it; `--minutes` stops early at a time budget
and the model written is the last state reached (its schedule then ends early, not cut short of
a decay: the learning rate follows the planned steps). Same seed, same steps → same weights.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from torch import nn
from tqdm import tqdm
from transformers import Qwen2ForCausalLM

sys.path.insert(0, str(Path(__file__).resolve().parent))
from nano_bpe import train_ranks, write_ranks  # noqa: E402
from nano_data import (  # noqa: E402
    batch_loss,
    batches,
    build_sequence,
    check_features,
    compute_features,
    item_paths,
    read_clip,
    whisper_encoder_state,
)

from workbench.models import registry  # noqa: E402
from workbench.models.qwen_audio import QwenAudio  # noqa: E402
from workbench.models.qwen_audio.config import QwenAudioConfig  # noqa: E402
from workbench.models.qwen_audio.encoder import AudioEncoder  # noqa: E402
from workbench.models.qwen_audio.nano import MAX_RANKS, NANO_SIZES, WHISPER_SOURCE, nano_config  # noqa: E402
from workbench.models.qwen_audio.official_layout import generation_config, to_official_state_dict  # noqa: E402
from workbench.synth import read_manifest  # noqa: E402
from workbench.tokenizer import TIKTOKEN_FILE, QwenAudioTokenizer  # noqa: E402

TRAINABLE_ENCODER = ("ln_post.", "proj.", "audio_bos_eos_token.")


def build_model(tokenizer_dir: Path, seed: int) -> QwenAudio:
    """A fresh nano model: Whisper-initialised encoder, random projection and LLM."""
    tokenizer = QwenAudioTokenizer.from_dir(tokenizer_dir)
    config = QwenAudioConfig.from_official(nano_config(tokenizer.n_ranks), generation_config())
    torch.manual_seed(seed)
    llm_config = config.llm
    llm_config._attn_implementation = "sdpa"
    network = nn.ModuleDict({"encoder": AudioEncoder(config.encoder), "llm": Qwen2ForCausalLM(llm_config)})
    whisper = whisper_encoder_state(registry.ensure_converted(WHISPER_SOURCE), NANO_SIZES["audio_layers"])
    missing, unexpected = network["encoder"].load_state_dict(whisper, strict=False)
    new = {"proj.weight", "proj.bias", "audio_bos_eos_token.weight"}
    if set(missing) != new or unexpected:
        raise RuntimeError(f"Whisper → encoder mapping left {missing} unset and {unexpected} unused")
    nn.init.normal_(network["encoder"].audio_bos_eos_token.weight, std=0.02)
    return QwenAudio(network, tokenizer, config, path=tokenizer_dir)


def trainable(model: QwenAudio) -> list[nn.Parameter]:
    params = []
    for name, p in model.encoder.named_parameters():
        p.requires_grad_(name.startswith(TRAINABLE_ENCODER))
        if p.requires_grad:
            params.append(p)
    return params + list(model.llm.parameters())


def export(model: QwenAudio, tokenizer_dir: Path, out: Path, log: Path | None) -> None:
    """The official layout: config.json, generation_config.json, tokenizer files, float16 weights."""
    out.mkdir(parents=True, exist_ok=True)
    state = {name: t.to(torch.float16).contiguous() for name, t in to_official_state_dict(model).items()}
    save_file(state, out / "model.safetensors", metadata={"format": "pt"})
    (out / "config.json").write_text(json.dumps(model.config.official, indent=2) + "\n")
    (out / "generation_config.json").write_text(json.dumps(generation_config(), indent=2) + "\n")
    (out / "tokenizer_config.json").write_text(json.dumps(
        {"model_max_length": 2048, "tokenizer_class": "QWenTokenizer", "n_bpe_ranks": model.tokenizer.n_ranks},
        indent=2) + "\n")
    shutil.copyfile(tokenizer_dir / TIKTOKEN_FILE, out / TIKTOKEN_FILE)
    if log is not None and log.exists():
        shutil.copyfile(log, out / "train_log.jsonl")


def schedule(step: int, total: int, peak: float, warmup: int = 100) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return float(peak * (0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * progress))))


def plan(sequences: dict[str, list], stage: int, epoch: int, seed: int, max_tokens: int) -> list[list]:
    """The batches of one epoch of a stage, fixed by (seed, stage, epoch): resuming replays them."""
    rng = np.random.default_rng([seed, stage, epoch])
    tagged = sequences["tagged"]
    if stage == 1:
        return batches(tagged, max_tokens, rng)
    chat = sequences["chat"]
    replay = [tagged[i] for i in rng.choice(len(tagged), size=min(len(tagged), len(chat)), replace=False)]
    return batches(chat + replay, max_tokens, rng)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, required=True, help="corpus directory (train/validation.jsonl)")
    parser.add_argument("--work", type=Path, required=True, help="features, tokenizer, training state, log")
    parser.add_argument("--out", type=Path, help="write the trained checkpoint here (official layout)")
    parser.add_argument("--steps", type=int, nargs=2, default=(7000, 800), metavar=("STAGE1", "STAGE2"))
    parser.add_argument("--max-tokens", type=int, default=2048, help="padded tokens per batch")
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--minutes", type=float, default=75.0, help="stop training after this much wall time")
    parser.add_argument("--save-every", type=float, default=120.0, help="seconds between saved states")
    parser.add_argument("--oversample", nargs="*", default=["asr=3"], metavar="TASK=N",
                        help="repeat a task's items N times in stage 1 (the hardest tasks get more steps)")
    parser.add_argument("--seed", type=int, default=0)
    # One thread: on a shared 2-core machine, two torch threads spin-wait against the other jobs
    # (measured: a clip's features took 2.5 s with two threads, 0.14 s with one).
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--export-only", action="store_true", help="write --out from the saved state and stop")
    args = parser.parse_args(argv)
    if args.export_only and args.out is None:
        parser.error("--export-only needs --out (where to write the checkpoint)")
    torch.set_num_threads(args.threads)
    began = time.perf_counter()
    args.work.mkdir(parents=True, exist_ok=True)
    train = read_manifest(args.corpus / "train.jsonl")
    validation = read_manifest(args.corpus / "validation.jsonl")

    tokenizer_dir = args.work / "tokenizer"
    if not (tokenizer_dir / TIKTOKEN_FILE).exists():
        tokenizer_dir.mkdir(exist_ok=True)
        texts = [r["reference"] for r in train] + [r["prompt"] for r in train]
        write_ranks(train_ranks(texts, MAX_RANKS), tokenizer_dir)
    model = build_model(tokenizer_dir, args.seed)
    encoder, llm, tokenizer = model.encoder, model.llm, model.tokenizer
    state_file, log_file = args.work / "state.pt", args.work / "train_log.jsonl"
    if args.export_only:   # the last saved state of a running or interrupted run, as a checkpoint
        state = torch.load(state_file, weights_only=False)   # our own state file: optimizer settings included
        model.network.load_state_dict(state["network"])
        model.network.eval()
        export(model, tokenizer_dir, args.out, log_file)
        print(f"wrote {args.out} from the state at step {state['step']}")
        return
    gap = check_features(encoder, read_clip(train[0]["audio_path"]))
    if gap > 1e-4:
        raise RuntimeError(f"cached features differ from AudioEncoder.encode by {gap}: the speed trick is wrong")

    paths = [p for row in train + validation for p in item_paths(row)]
    features = compute_features(encoder, paths, args.work / "features.pt")
    repeat = dict((task, int(n)) for task, n in (pair.split("=") for pair in args.oversample))
    sequences = {"tagged": [build_sequence(tokenizer, r, features) for r in train if r["task"] != "chat"
                            for _ in range(repeat.get(r["task"], 1))],
                 "chat": [build_sequence(tokenizer, r, features) for r in train if r["task"] == "chat"]}
    # A fixed slice of the validation split (15 items a task) keeps each validation to seconds.
    held_out = [build_sequence(tokenizer, r, features) for r in validation
                if sum(v["task"] == r["task"] for v in validation[: validation.index(r)]) < 15]

    params = trainable(model)
    optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.01, betas=(0.9, 0.98))
    step = 0
    if args.resume and state_file.exists():
        state = torch.load(state_file, weights_only=False)   # our own state file: optimizer settings included
        model.network.load_state_dict(state["network"])
        optimizer.load_state_dict(state["optimizer"])
        step = state["step"]
    elif log_file.exists():
        log_file.unlink()
    total = sum(args.steps)
    print(f"{len(sequences['tagged'])} tag + {len(sequences['chat'])} chat sequences, "
          f"{sum(p.numel() for p in params):,} trainable parameters, steps {args.steps}, from step {step}", flush=True)

    def save() -> None:
        torch.save({"network": model.network.state_dict(), "optimizer": optimizer.state_dict(), "step": step},
                   state_file.with_suffix(".tmp"))
        state_file.with_suffix(".tmp").replace(state_file)   # never a half-written state

    def validate() -> float:
        model.network.eval()
        with torch.no_grad():
            losses = [batch_loss(encoder, llm, b, features, tokenizer.endoftext_id)
                      for b in batches(held_out, args.max_tokens, np.random.default_rng(0))]
        model.network.train()
        return sum(loss.item() * n for loss, n in losses) / sum(n for _, n in losses)

    last_save, stopped = time.perf_counter(), False
    model.network.train()
    progress = tqdm(total=total, initial=step, desc="train", unit="step", mininterval=10)
    with open(log_file, "a", encoding="utf-8") as log:
        while step < total and not stopped:
            stage = 1 if step < args.steps[0] else 2
            stage_start = 0 if stage == 1 else args.steps[0]
            epoch_batches = plan(sequences, stage, 0, args.seed, args.max_tokens)
            epoch, index = divmod(step - stage_start, len(epoch_batches))
            epoch_batches = plan(sequences, stage, epoch, args.seed, args.max_tokens)
            for batch in epoch_batches[index:]:
                if step >= (args.steps[0] if stage == 1 else total):
                    break
                lr = schedule(step, total, args.lr)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                loss, n_tokens = batch_loss(encoder, llm, batch, features, tokenizer.endoftext_id)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                optimizer.step()
                step += 1
                progress.update(1)
                record = {"step": step, "stage": stage, "loss": round(loss.item(), 4), "tokens": n_tokens,
                          "lr": round(lr, 6), "seconds": round(time.perf_counter() - began, 1)}
                if step % 200 == 0 or step == total:
                    record["validation_loss"] = round(validate(), 4)
                    progress.write(json.dumps(record))
                log.write(json.dumps(record) + "\n")
                log.flush()
                if time.perf_counter() - last_save > args.save_every:
                    save()
                    last_save = time.perf_counter()
                if time.perf_counter() - began > args.minutes * 60:
                    progress.write(f"time budget of {args.minutes} min reached at step {step}")
                    stopped = True
                    break
    progress.close()
    save()
    model.network.eval()
    if args.out is not None:
        export(model, tokenizer_dir, args.out, log_file)
        print(f"wrote {args.out} at step {step} after {(time.perf_counter() - began) / 60:.1f} min", flush=True)


if __name__ == "__main__":
    main()
