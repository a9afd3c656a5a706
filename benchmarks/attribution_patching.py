"""Attribution patching against the real head-patching sweep it estimates, on nano (same run).

Both score log p of the clean answer (nano's greedy English transcript of speech_en) for the
English transcription prompt (clean) against the same prompt with the text-language tag set to
German (corrupt), over every layer × head of nano's LLM (4 × 6):

(a) `attribution_patch(what="head")`: one clean forward, one corrupted forward + backward;
(b) `patch_sweep(what="head")`: one corrupted forward per layer × head (plus its clean runs).

The two alternate over --repeats (load from other processes hits both alike); the ratio is taken
within each repeat and the median reported, with the agreement (Pearson r) of the two results.
Attribution patching costs about 3 forwards whatever the number of heads, patching one per head,
so the ratio grows with layers × heads: ~1,000 on the 32 × 32 heads of Qwen-Audio's 7B LLM.

    python benchmarks/attribution_patching.py [--repeats 5] [--threads 1]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

import workbench as wb
from workbench.analysis.attribution_patching import agreement, attribution_patch
from workbench.analysis.patching import patch_sweep


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = wb.load("nano")
    audio = wb.load_audio(wb.demo.demo_path("speech_en"))
    clean = wb.preset("librispeech", lang="en").render()
    corrupt = clean.replace("<|en|><|notimestamps|>", "<|de|><|notimestamps|>")
    answer = model.generate(f"<audio>a</audio>{clean}", [audio]).text   # the clean answer, decoded once, untimed
    attribution_patch(model, clean, corrupt, audio, continuation=answer)        # warm up both paths
    patch_sweep(model, clean, corrupt, audio, what="head", layers=[0], continuation=answer)
    ratios, fast, slow = [], [], []
    for _ in range(args.repeats):
        start = time.perf_counter()
        estimate = attribution_patch(model, clean, corrupt, audio, what="head", continuation=answer)
        middle = time.perf_counter()
        real = patch_sweep(model, clean, corrupt, audio, what="head", continuation=answer)
        end = time.perf_counter()
        fast.append(middle - start)
        slow.append(end - middle)
        ratios.append(slow[-1] / fast[-1])
    measured = agreement(estimate, real)
    stack = model.adapter.sequence
    print(f"nano, {len(stack.layers)} layers × {stack.n_heads} heads, torch threads {args.threads}, "
          f"{args.repeats} repeats")
    print(f"attribution_patch  median {statistics.median(fast):.3f} s")
    print(f"patch_sweep (head) median {statistics.median(slow):.3f} s")
    print(f"ratio median {statistics.median(ratios):.2f}× (best {max(ratios):.2f}×)")
    print(f"agreement: Pearson r {measured.pearson:.3f}, Spearman ρ {measured.spearman:.3f} over {measured.n} heads")


if __name__ == "__main__":
    main()
