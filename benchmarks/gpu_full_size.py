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
   runs to the memory bandwidth (1.0 would be the bound).
The weights are random, so the tokens are noise; greedy decoding of noise can also hit a stop token
early: the report counts the tokens actually generated.

    python benchmarks/gpu_full_size.py [--keep DIR] [--tiktoken PATH] [--audio PATH] [--new-tokens 128]
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keep", type=Path, help="write (or reuse) the checkpoint here instead of a temp dir")
    parser.add_argument("--tiktoken", type=Path, help="a real qwen.tiktoken to copy (default: synthetic)")
    parser.add_argument("--audio", type=Path, help="a clip to use instead of the demo sentence (first 30 s)")
    parser.add_argument("--new-tokens", type=int, default=128, help="greedy tokens to time (default 128)")
    parser.add_argument("--device-map", action="store_true",
                        help="spread the model over every visible GPU (device_map='auto') instead of one")
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

    result = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "placement": model.describe()["device"],
        "dry_run": args.dry_run, "dtype": str(dtype).removeprefix("torch."),
        "parameters": sum(p.numel() for p in model.network.parameters()), "weights_gb": weights / 1e9,
        "load_s": load_s, "peak_gpu_gb": peak and peak / 1e9, "peak_over_weights": peak and peak / weights,
        "prompt_positions": inputs.length, "prefill_s": prefill_s, "new_tokens": n_new,
        "generate_s": generate_s, "tokens_per_s": n_new / generate_s, "decode_step_s": step_s,
        "weight_pass_s": weight_pass_s, "decode_step_over_weight_pass": step_s and step_s / weight_pass_s,
    }
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
