"""The published size on a GPU: load 8.4 B parameters in bfloat16, time greedy decoding on a 30 s clip.

Needs a CUDA device with ≥ 24 GB and ~20 GB of free disk. Steps, all in one run:
1. write a random checkpoint of `REAL_CONFIG` (the published sizes, bfloat16 on disk, ~2 GB shards,
   `workbench.models.qwen_audio.official_layout.write_random_checkpoint`), unless --keep DIR already holds one;
2. load it on cuda in bfloat16: seconds, and peak GPU memory over the bytes of the weights;
3. the official ASR prompt on a 30 s clip (752 audio positions): the prefill (audio encoder + the
   prompt's LLM pass + the first token) and greedy decoding of --new-tokens tokens, after one warm-up;
   a decoding step is (decoding − prefill) / (tokens − 1);
4. baseline, same run: one pass reading every weight on the GPU (`sum` of each parameter). A
   decoding step reads every LLM weight once, so `decode step ÷ weight pass` says how close decoding
   runs to the memory bandwidth (1.0 would be the bound);
5. the analysis sweeps at this size, each timed once after the warm-up above, with the peak GPU memory
   each reaches and `memory_plan`'s prediction of what it holds (`workbench.analysis.memory`):
   - tag ablation: `ablate(..., variants="drop")` on the same clip (6 drop variants + the base,
     greedy outputs of --sweep-tokens tokens and their log-probabilities, packed on the shared
     audio prefix);
   - activation patching: `patch_sweep` of the residual stream, every LLM layer × the position
     groups audio / tags / text, from the German ASR prompt into the German→English translation
     prompt, scored by log p of the source's greedy output (--sweep-tokens tokens).
The weights are random, so the tokens are noise; greedy decoding of noise can also hit a stop token
early: the report counts the tokens actually generated.

    python benchmarks/gpu_full_size.py [--keep DIR] [--tiktoken PATH] [--audio PATH] [--new-tokens 128]
                                      [--sweep-tokens 16] [--no-sweeps]
    python benchmarks/gpu_full_size.py --dry-run     # the same steps on tiny sizes, CPU allowed

Without a CUDA device (and without --dry-run) it says so and exits with status 0 ("skipped"), so that
`make bench` passes on CPU machines.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from workbench.analysis.ablation import ablate
from workbench.analysis.memory import memory_plan
from workbench.analysis.patching import patch_sweep
from workbench.audio import N_SAMPLES, audio_span_tokens, load_audio
from workbench.demo import demo_path
from workbench.models.qwen_audio import load_qwen_audio
from workbench.models.qwen_audio.official_layout import REAL_CONFIG, official_config, write_random_checkpoint
from workbench.tags import preset

DRY_RUN_CONFIG = official_config(hidden=64, layers=2, heads=4, intermediate=256,
                                 audio_state=64, audio_layers=2, audio_heads=4)


def thirty_seconds(path: Path | None) -> np.ndarray:
    """A 30 s clip: the given file's first 30 s, or the English demo sentence repeated to 30 s."""
    if path is not None:
        return load_audio(path, on_long="truncate")[:N_SAMPLES]
    sentence = load_audio(demo_path("speech_en"))
    return np.tile(sentence, N_SAMPLES // len(sentence) + 1)[:N_SAMPLES]


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(device: torch.device, run) -> tuple[float, object]:
    synchronize(device)
    start = time.perf_counter()
    result = run()
    synchronize(device)
    return time.perf_counter() - start, result


def peak_gb(gpus: list[torch.device], run) -> tuple[float, float | None, object]:
    """Seconds, peak GPU memory (GB, all devices) and the result of `run`."""
    for gpu in gpus:
        torch.cuda.reset_peak_memory_stats(gpu)
    seconds, result = timed(gpus[0] if gpus else torch.device("cpu"), run)
    return seconds, (sum(torch.cuda.max_memory_allocated(gpu) for gpu in gpus) / 1e9 if gpus else None), result


def sweeps(model, clip: np.ndarray, gpus: list[torch.device], new_tokens: int) -> dict:
    """Time a tag-ablation sweep and a residual patching sweep (step 5 of the module docstring)."""
    asr = preset("librispeech")
    ablate_s, ablate_peak, ablation = peak_gb(gpus, lambda: ablate(model, clip, asr, "drop",
                                                                   max_new_tokens=new_tokens))
    source, target = preset("librispeech", lang="de"), preset("covost2", src="de", tgt="en")
    patch_s, patch_peak, patching = peak_gb(gpus, lambda: patch_sweep(model, source, target, clip, what="resid",
                                                                      max_new_tokens=new_tokens))
    length = model.inputs(asr, audio=clip).length
    plan = memory_plan(model, length + new_tokens, len(clip) / 16000).set_index("item")
    return {"ablate_variants": len(ablation.variants) + 1, "ablate_s": ablate_s, "ablate_peak_gpu_gb": ablate_peak,
            "ablate_prefix_kv_gb_planned": plan.loc["shared audio prefix: keys and values", "bytes"] / 1e9,
            "patch_runs": int(np.prod(patching.scores.shape)), "patch_s": patch_s,
            "patch_s_per_run": patch_s / max(1, int(np.prod(patching.scores.shape))),
            "patch_peak_gpu_gb": patch_peak,
            "patch_recorded_gb_planned": plan.loc["source activations, what='resid' or 'head' (all layers)", "bytes"]
            / 1e9}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keep", type=Path, help="write (or reuse) the checkpoint here instead of a temp dir")
    parser.add_argument("--tiktoken", type=Path, help="a real qwen.tiktoken to copy (default: synthetic)")
    parser.add_argument("--audio", type=Path, help="a clip to use instead of the demo sentence (first 30 s)")
    parser.add_argument("--new-tokens", type=int, default=128, help="greedy tokens to time (default 128)")
    parser.add_argument("--device-map", action="store_true",
                        help="spread the model over every visible GPU (device_map='auto') instead of one")
    parser.add_argument("--sweep-tokens", type=int, default=16,
                        help="greedy tokens of the ablation and patching sweeps (default 16)")
    parser.add_argument("--no-sweeps", action="store_true", help="skip step 5 (ablation and patching sweeps)")
    parser.add_argument("--dry-run", action="store_true", help="tiny sizes, any device: checks the script runs")
    args = parser.parse_args()
    if args.dry_run:
        config, device = DRY_RUN_CONFIG, torch.device("cuda" if torch.cuda.is_available() else "cpu")
    elif not torch.cuda.is_available():
        print("skipped: no CUDA device. This benchmark loads the published 8.4 B model in bfloat16 (16.8 GB) "
              "and needs a GPU with ≥ 24 GB; run it on one, or pass --dry-run to check it on tiny sizes.")
        return 0
    else:
        config, device = REAL_CONFIG, torch.device("cuda")
    dtype = torch.bfloat16

    with tempfile.TemporaryDirectory() as scratch:
        directory = args.keep or Path(scratch) / "qwen-audio-random"
        if not (directory / "config.json").exists():
            seconds, _ = timed(torch.device("cpu"), lambda: write_random_checkpoint(
                directory, config, dtype=torch.bfloat16, tokenizer=args.tiktoken))
            print(f"wrote {sum(p.stat().st_size for p in directory.glob('*.safetensors')) / 1e9:.2f} GB "
                  f"in {seconds:.1f} s to {directory}")
        gpus = [torch.device(f"cuda:{i}") for i in range(torch.cuda.device_count())] if device.type == "cuda" else []
        for gpu in gpus:
            torch.cuda.reset_peak_memory_stats(gpu)
        placement = {"device_map": "auto"} if args.device_map else {"device": device}
        load_s, model = timed(device, lambda: load_qwen_audio(directory, dtype=dtype, **placement))
        weights = sum(t.numel() * t.element_size() for t in [*model.network.parameters(), *model.network.buffers()])
        peak = sum(torch.cuda.max_memory_allocated(gpu) for gpu in gpus) if gpus else None

        clip = thirty_seconds(args.audio)
        inputs = model.inputs(preset("librispeech"), audio=clip)
        assert inputs.audios[0].n_positions == audio_span_tokens(N_SAMPLES)
        model.generate(inputs, max_new_tokens=2)                           # warm-up: kernels, allocator
        prefill_s, _ = timed(device, lambda: model.generate(inputs, max_new_tokens=1))   # encoder + prompt pass
        generate_s, generation = timed(device, lambda: model.generate(inputs, max_new_tokens=args.new_tokens))
        # what one decoding step reads: every LLM weight except the embedding table (one row of it)
        read_per_step = [p for name, p in model.llm.named_parameters() if "embed_tokens" not in name]
        weight_pass_s, _ = timed(device, lambda: [p.sum() for p in read_per_step])
        n_new = len(generation.ids) + (generation.stop_token is not None)
        step_s = (generate_s - prefill_s) / (n_new - 1) if n_new > 1 else None
        swept = {} if args.no_sweeps else sweeps(model, clip, gpus, args.sweep_tokens)

    result = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "placement": model.describe()["device"],
        "dry_run": args.dry_run, "dtype": str(dtype).removeprefix("torch."),
        "parameters": sum(p.numel() for p in model.network.parameters()), "weights_gb": weights / 1e9,
        "load_s": load_s, "peak_gpu_gb": peak and peak / 1e9, "peak_over_weights": peak and peak / weights,
        "prompt_positions": inputs.length, "prefill_s": prefill_s, "new_tokens": n_new,
        "generate_s": generate_s, "tokens_per_s": n_new / generate_s, "decode_step_s": step_s,
        "weight_pass_s": weight_pass_s, "decode_step_over_weight_pass": step_s and step_s / weight_pass_s,
        **swept,
    }
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
