"""Train nano v2 by the paper's stages, in miniature (Qwen-Audio, arXiv 2311.07919, §3):

    lm      the nano LLM learns real text first (train-split sentences, written and as transcripts);
    stage1  multitask pretraining on every tag task: the audio encoder's trained part (layer mix,
            adapter, ln_post, proj, bos/eos) learns with the LLM frozen — except the rows of the audio
            tags in the embedding and output matrices, which text pretraining never saw;
    stage2  SFT on ChatML (+ tag items, one in two, so the shipped model keeps its tags): the LLM
            learns, the encoder is frozen;
    joint   v1's regime for comparison: no LM stage, encoder head and LLM trained together on everything.

    python recipes/v2/train_nano_v2.py --corpus runs/v2/corpus --work runs/v2/work --out runs/v2/nano --stage all

`--stage all` = lm → stage1 → stage2. Each stage writes its checkpoint to WORK/ckpt-STAGE (official
layout + the v2 encoder keys, float16) and a `STAGE.done` mark; the next stage starts from it. A
stage's full state (weights, optimizer, step) is saved every --save-every seconds and at its end, so
a rerun resumes where it stopped; a finished stage is skipped. Seeded: same corpus, seed and steps →
same weights. Encoder features are computed once (in --workers processes) and cached by content.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import data_v2  # noqa: E402
from model_v2 import SIZES, build_model, export, load_v2  # noqa: E402
from nano_bpe import train_ranks, write_ranks  # noqa: E402
from nano_data import batches  # noqa: E402

from workbench.synth import read_manifest  # noqa: E402
from workbench.tokenizer import TIKTOKEN_FILE  # noqa: E402

STAGES = ("lm", "stage1", "stage2", "joint")
START_FROM = {"lm": None, "stage1": "lm", "stage2": "stage1", "joint": None}


def schedule(step: int, total: int, peak: float, warmup: int = 100) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return float(peak * (0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * progress))))


def trainable(stage: str, model, mix) -> list[dict]:
    """Parameter groups of a stage (everything else frozen)."""
    for p in [*model.network.parameters(), *mix.parameters()]:
        p.requires_grad_(False)
    llm = model.llm
    if stage == "stage1":
        n_ranks = model.tokenizer.n_ranks
        rows = [llm.model.embed_tokens.weight, llm.lm_head.weight]
        for p in rows:  # only the special-token rows learn: the text rows keep what the LM stage learned
            p.requires_grad_(True)
            p.register_hook(lambda g: torch.cat([torch.zeros_like(g[:n_ranks]), g[n_ranks:]]))
        head = mix.trainable_parameters()
        for p in head:
            p.requires_grad_(True)
        return [{"params": head}, {"params": rows, "weight_decay": 0.0}]
    params = list(llm.parameters()) + (mix.trainable_parameters() if stage == "joint" else [])
    for p in params:
        p.requires_grad_(True)
    return [{"params": params}]


def plan(stage: str, sequences: dict, epoch: int, seed: int, max_tokens: int, replay: float = 1.0) -> list[list]:
    rng = np.random.default_rng([seed, STAGES.index(stage), epoch])
    if stage == "lm":
        return batches(sequences["lm"], max_tokens, rng)
    if stage == "stage1":
        return batches(sequences["tagged"], max_tokens, rng)
    if stage == "joint":
        return batches(sequences["tagged"] + sequences["chat"], max_tokens, rng)
    chat, tagged = sequences["chat"], sequences["tagged"]
    if not chat:  # a corpus without chat items (smoke tests): SFT on the tag items alone
        return batches(tagged, max_tokens, rng)
    # Tag items replayed beside ChatML, a new sample each epoch. The first run replayed as many as there
    # are chat items (1,260 of 21,000), so stage 2 saw ~900 ASR clips an epoch and never learned to read
    # speech; the default now replays them all (`--replay` < 1 samples a fraction).
    count = min(len(tagged), round(replay * len(tagged)))
    replayed = [tagged[i] for i in rng.choice(len(tagged), size=count, replace=False)]
    return batches(chat + replayed, max_tokens, rng)


def locate(step: int, epoch_length) -> tuple[int, int]:
    """(epoch, batch index) of `step`. Epochs differ in length (stage 2 replays a new sample of tag items
    each epoch), so the position is found by walking them; dividing by the first epoch's length would
    point past the end of a shorter epoch, and the stage would loop without training."""
    epoch = 0
    while step >= (length := epoch_length(epoch)):
        step, epoch = step - length, epoch + 1
    return epoch, step


def run_stage(stage: str, args, model, mix, sequences: dict, held_out: list, features, log_file: Path) -> None:
    work, steps = args.work, args.steps[stage]
    state_file = work / f"state-{stage}.pt"
    groups = trainable(stage, model, mix)
    ctc_weight = args.ctc[stage] if stage in ("stage1", "joint") else 0.0
    n_ranks = model.tokenizer.n_ranks
    ctc_head = torch.nn.Linear(model.llm.config.hidden_size, n_ranks + 1) if ctc_weight else None  # + blank
    if ctc_head is not None:
        groups.append({"params": list(ctc_head.parameters())})
    params = [p for g in groups for p in g["params"]]
    optimizer = torch.optim.AdamW(groups, lr=args.lr[stage], weight_decay=0.01, betas=(0.9, 0.98))
    step, spent = 0, 0.0
    if state_file.exists():
        state = torch.load(state_file, weights_only=False)  # our own file: optimizer settings included
        model.network.load_state_dict(state["network"]), mix.load_state_dict(state["mix"])
        optimizer.load_state_dict(state["optimizer"])
        if ctc_head is not None:
            ctc_head.load_state_dict(state["ctc"])
        step, spent = state["step"], state.get("seconds", 0.0)
    pad = model.tokenizer.endoftext_id

    def save() -> None:
        torch.save({"network": model.network.state_dict(), "mix": mix.state_dict(), "optimizer": optimizer.state_dict(),
                    "ctc": ctc_head.state_dict() if ctc_head is not None else None, "step": step,
                    "seconds": time.perf_counter() - began}, state_file.with_suffix(".tmp"))
        state_file.with_suffix(".tmp").replace(state_file)

    def validate() -> float:
        model.network.eval(), mix.eval()
        with torch.no_grad():
            losses = [data_v2.batch_loss(mix, model.llm, b, features, pad)
                      for b in batches(held_out, args.max_tokens, np.random.default_rng(0))]
        model.network.train(), mix.train()
        return sum(loss.item() * n for loss, n in losses) / max(1, sum(n for _, n in losses))

    def stage_plan(epoch: int) -> list[list]:
        return plan(stage, sequences, epoch, args.seed, args.max_tokens, args.replay)

    if not stage_plan(0):
        raise SystemExit(f"{stage}: no training sequences (is the corpus empty, or --lm-length longer than the text?)")
    print(f"{stage}: {sum(p.numel() for p in params):,} trainable parameters, {steps} steps, from step {step}", flush=True)
    began, last_save = time.perf_counter() - spent, time.perf_counter()  # time budgets count resumed runs too
    first, resumed = step, time.perf_counter()   # this run's pace, for fitting the schedule to the budget
    model.network.train(), mix.train()
    progress = tqdm(total=steps, initial=step, desc=stage, unit="step", mininterval=10)
    with open(log_file, "a", encoding="utf-8") as log:
        while step < steps:
            epoch, index = locate(step, lambda e: len(stage_plan(e)))
            for batch in stage_plan(epoch)[index:]:
                if step >= steps:
                    break
                lr = schedule(step, steps, args.lr[stage])
                for group in optimizer.param_groups:
                    group["lr"] = lr
                clips: list = []
                loss, n = data_v2.batch_loss(mix, model.llm, batch, features, pad, clips)
                ctc = data_v2.ctc_loss(ctc_head, clips, n_ranks) if ctc_head is not None else None
                optimizer.zero_grad(set_to_none=True)
                (loss if ctc is None else loss + ctc_weight * ctc).backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                optimizer.step()
                step += 1
                progress.update(1)
                record = {"stage": stage, "step": step, "loss": round(loss.item(), 4), "tokens": n, "lr": round(lr, 6),
                          **({"ctc": round(ctc.item(), 4)} if ctc is not None else {}),
                          "seconds": round(time.perf_counter() - began, 1)}
                if held_out and (step % args.validate_every == 0 or step == steps):
                    record["validation_loss"] = round(validate(), 4)
                    record["layer_weights"] = [round(w, 3) for w in mix.layer_weights().tolist()]
                    progress.write(json.dumps(record))
                log.write(json.dumps(record) + "\n")
                log.flush()
                if time.perf_counter() - last_save > args.save_every:
                    save()
                    last_save = time.perf_counter()
                if args.minutes[stage] and (step - first) % 100 == 50:
                    # Fit the schedule to the time budget, so a capped stage still decays its learning rate
                    # to the end instead of stopping at the peak; re-fitted as the machine's load changes.
                    rate = (time.perf_counter() - resumed) / (step - first)
                    left = 60 * args.minutes[stage] - (time.perf_counter() - began)
                    steps = max(step + 1, min(args.steps[stage], step + int(0.95 * left / rate)))
                    progress.total = steps
                if args.minutes[stage] and time.perf_counter() - began > 60 * args.minutes[stage]:
                    progress.write(f"{stage}: time budget of {args.minutes[stage]} min reached at step {step}")
                    steps = step  # the stage ends here (its schedule ends early, as v1's --minutes)
                    break
    progress.close()
    save()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, required=True)
    parser.add_argument("--work", type=Path, required=True, help="tokenizer, feature cache, states, stage checkpoints")
    parser.add_argument("--out", type=Path, help="copy the last stage's checkpoint here")
    parser.add_argument("--stage", choices=(*STAGES, "all"), default="all")
    parser.add_argument("--steps", nargs=4, type=int, default=(400, 5000, 1500, 6000), metavar=("LM", "S1", "S2", "JOINT"))
    parser.add_argument("--minutes", nargs=4, type=float, default=(0, 0, 0, 0), metavar=("LM", "S1", "S2", "JOINT"),
                        help="end a stage after this much wall time (0: run all its steps)")
    parser.add_argument("--lr", nargs=4, type=float, default=(2e-3, 2e-3, 1e-3, 2e-3), metavar=("LM", "S1", "S2", "JOINT"))
    parser.add_argument("--ctc", nargs=4, type=float, default=(0, 1, 0, 1), metavar=("LM", "S1", "S2", "JOINT"),
                        help="weight of the auxiliary CTC loss on the audio embeddings (stages that train the encoder)")
    parser.add_argument("--replay", type=float, default=1.0, help="stage 2: fraction of tag items replayed each epoch")
    parser.add_argument("--max-tokens", type=int, default=2048, help="padded tokens per batch")
    parser.add_argument("--lm-length", type=int, default=128, help="tokens per LM-stage sequence")
    parser.add_argument("--lm-sentences", type=int, default=0, help="cap on real sentences per language (0: all)")
    parser.add_argument("--n-ranks", type=int, default=4096, help="BPE ranks (the tags come after them)")
    parser.add_argument("--hidden", type=int, default=SIZES["hidden"])
    parser.add_argument("--layers", type=int, default=SIZES["layers"])
    parser.add_argument("--oversample", nargs="*", default=["asr=2", "srwt=2"], metavar="TASK=N")
    parser.add_argument("--validate-every", type=int, default=250)
    parser.add_argument("--save-every", type=float, default=300.0, help="seconds between saved states")
    parser.add_argument("--workers", type=int, default=data_v2.default_workers(), help="processes for features")
    parser.add_argument("--threads", type=int, default=1, help="torch threads for training")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    args.steps, args.lr, args.minutes, args.ctc = (dict(zip(STAGES, v)) for v in (args.steps, args.lr, args.minutes, args.ctc))
    sizes = SIZES | {"hidden": args.hidden, "layers": args.layers, "heads": max(1, args.hidden // 32),
                     "intermediate": 6 * args.hidden}
    torch.set_num_threads(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    stages = ["lm", "stage1", "stage2"] if args.stage == "all" else [args.stage]
    train = read_manifest(args.corpus / "train.jsonl")
    validation = read_manifest(args.corpus / "validation.jsonl")

    tokenizer_dir = args.work / "tokenizer"
    if not (tokenizer_dir / TIKTOKEN_FILE).exists():
        tokenizer_dir.mkdir(exist_ok=True)
        texts = data_v2.lm_texts(args.seed, limit=args.lm_sentences) + [r["reference"] for r in train] + \
            [r["prompt"] for r in train]
        write_ranks(train_ranks(texts, args.n_ranks), tokenizer_dir)
    model, mix = build_model(tokenizer_dir, sizes, args.seed)
    tokenizer = model.tokenizer
    log_file = args.work / "train_log.jsonl"

    held_rows = [r for r in validation if sum(v["kind"] == r["kind"] for v in validation[: validation.index(r)]) < 15]
    sequences: dict[str, list] = {}
    held_out: list = []
    features = None
    if any(s != "lm" for s in stages):
        paths = [p for r in train + held_rows for p in data_v2.item_paths(r)]
        digests = data_v2.compute_features(mix, paths, args.work / "features", tokenizer_dir, sizes, args.workers)
        held_digests = {digests[p] for r in held_rows for p in data_v2.item_paths(r)}
        features = data_v2.LazyFeatures(mix, args.work / "features", held_digests)
        n_tokens = {d: features.n_tokens(d) for d in tqdm(set(digests.values()), desc="feature sizes", mininterval=10)}
        repeat = {t: int(n) for t, n in (pair.split("=") for pair in args.oversample)}
        sequences["tagged"] = [data_v2.build_sequence(tokenizer, r, n_tokens, digests) for r in train if r["task"] != "chat"
                               for _ in range(repeat.get(r["task"], 1))]
        sequences["chat"] = [data_v2.build_sequence(tokenizer, r, n_tokens, digests) for r in train if r["task"] == "chat"]
        held_out = [data_v2.build_sequence(tokenizer, r, n_tokens, digests) for r in held_rows]
    if "lm" in stages:
        lm_text = data_v2.lm_texts(args.seed, limit=args.lm_sentences)
        sequences["lm"] = data_v2.lm_sequences(tokenizer, lm_text, args.lm_length, np.random.default_rng([args.seed, 7]))
    for stage in stages:
        done, checkpoint = args.work / f"{stage}.done", args.work / f"ckpt-{stage}"
        if done.exists():
            print(f"{stage}: done already ({checkpoint})")
            continue
        source = START_FROM[stage]
        if source is not None:
            if not (args.work / f"{source}.done").exists():
                raise SystemExit(f"{stage} starts from the {source} stage, which has not finished: run --stage {source}")
            trained, trained_mix = load_v2(args.work / f"ckpt-{source}")
            model.network.load_state_dict(trained.network.state_dict()), mix.load_state_dict(trained_mix.state_dict())
        run_stage(stage, args, model, mix, sequences, [] if stage == "lm" else held_out, features, log_file)
        size = export(model, mix, tokenizer_dir, checkpoint, log_file)
        done.write_text(json.dumps({"bytes": size}) + "\n")
        print(f"{stage}: wrote {checkpoint} ({size / 2 ** 20:.1f} MiB)", flush=True)
    if args.out is not None:
        last = args.work / f"ckpt-{stages[-1]}"
        args.out.mkdir(parents=True, exist_ok=True)
        for file in last.iterdir():
            (args.out / file.name).write_bytes(file.read_bytes())
        print(f"copied {last} → {args.out}")


if __name__ == "__main__":
    main()
