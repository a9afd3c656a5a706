"""Peak memory of `load_qwen_audio` over the bytes of the weights it loads (goal ≤ 1.15×).

Writes a deterministic official-layout checkpoint of about 1.7 GB into a temporary directory:
the real vocabulary (155,947 rows), an LLM of hidden 1280 × 20 layers, an encoder of 640 × 8
blocks, float16 on disk, in ~200 MB shards with `model.safetensors.index.json`, and the
fixture's `qwen.tiktoken`. Then, for each load dtype, a fresh subprocess imports everything,
resets its peak-RSS mark, loads, and reports

    memory ratio = (peak RSS after loading − peak RSS after imports) / bytes of the loaded weights

The increase includes the tokenizer (~0.1 GB of Python objects). Baseline measured in the same
run: the time to read every shard's bytes from the page cache (`read_bytes`), against which the
load time is given as a ratio.

    python benchmarks/load.py [--keep DIR] [--tiktoken PATH]
"""
from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TIKTOKEN = REPO.parent / "shared" / "fixtures" / "qwen_audio_v1_tiny" / "checkpoint" / "qwen.tiktoken"
SHARD_BYTES = 200 * 2**20
DTYPES = ("float16", "bfloat16", "float32")
GOAL = 1.15

CONFIG = {
    "architectures": ["QWenLMHeadModel"], "model_type": "qwen", "vocab_size": 155947,
    "hidden_size": 1280, "num_attention_heads": 10, "kv_channels": 128, "num_hidden_layers": 20,
    "intermediate_size": 2 * 3456, "layer_norm_epsilon": 1e-6, "rotary_emb_base": 10000, "rotary_pct": 1.0,
    "seq_length": 2048, "max_position_embeddings": 8192, "use_dynamic_ntk": True, "use_logn_attn": True,
    "no_bias": True, "tie_word_embeddings": False, "torch_dtype": "float16",
    "audio": {"n_mels": 80, "n_ctx": 1500, "n_state": 640, "n_head": 10, "n_layer": 8, "output_dim": 1280,
              "avg_pool": True, "add_audio_bos_eos_token": True, "audio_start_id": 155163},
}


def official_shapes(config: dict) -> dict[str, tuple[int, ...]]:
    """Every tensor of the published layout for `config`, in checkpoint order."""
    a, h, v = config["audio"], config["hidden_size"], config["vocab_size"]
    s, ffn = a["n_state"], config["intermediate_size"] // 2
    shapes = {"transformer.wte.weight": (v, h)}
    shapes.update({"transformer.audio.conv1.weight": (s, a["n_mels"], 3), "transformer.audio.conv1.bias": (s,),
                   "transformer.audio.conv2.weight": (s, s, 3), "transformer.audio.conv2.bias": (s,),
                   "transformer.audio.positional_embedding": (a["n_ctx"], s)})
    for i in range(a["n_layer"]):
        block = f"transformer.audio.blocks.{i}"
        for name in ("query", "value", "out"):
            shapes |= {f"{block}.attn.{name}.weight": (s, s), f"{block}.attn.{name}.bias": (s,)}
        shapes |= {f"{block}.attn.key.weight": (s, s), f"{block}.mlp.0.weight": (4 * s, s), f"{block}.mlp.0.bias": (4 * s,),
                   f"{block}.mlp.2.weight": (s, 4 * s), f"{block}.mlp.2.bias": (s,)}
        for norm in ("attn_ln", "mlp_ln"):
            shapes |= {f"{block}.{norm}.weight": (s,), f"{block}.{norm}.bias": (s,)}
    shapes |= {"transformer.audio.ln_post.weight": (s,), "transformer.audio.ln_post.bias": (s,),
               "transformer.audio.proj.weight": (a["output_dim"], s), "transformer.audio.proj.bias": (a["output_dim"],),
               "transformer.audio.audio_bos_eos_token.weight": (2, a["output_dim"])}
    for i in range(config["num_hidden_layers"]):
        layer = f"transformer.h.{i}"
        shapes |= {f"{layer}.ln_1.weight": (h,), f"{layer}.attn.c_attn.weight": (3 * h, h),
                   f"{layer}.attn.c_attn.bias": (3 * h,), f"{layer}.attn.c_proj.weight": (h, h),
                   f"{layer}.ln_2.weight": (h,), f"{layer}.mlp.w1.weight": (ffn, h), f"{layer}.mlp.w2.weight": (ffn, h),
                   f"{layer}.mlp.c_proj.weight": (h, ffn)}
    shapes |= {"transformer.ln_f.weight": (h,), "lm_head.weight": (v, h)}
    return shapes


def write_checkpoint(directory: Path, tiktoken: Path) -> int:
    """The benchmark checkpoint (float16, sharded, seeded); returns its tensor bytes."""
    import torch
    from safetensors.torch import save_file

    generator = torch.Generator().manual_seed(0)
    shards: list[list[tuple[str, tuple[int, ...]]]] = [[]]
    filled = 0
    for name, shape in official_shapes(CONFIG).items():
        size = math.prod(shape) * 2
        if shards[-1] and filled + size > SHARD_BYTES:
            shards.append([])
            filled = 0
        shards[-1].append((name, shape))
        filled += size
    weight_map, total = {}, 0
    for i, shard in enumerate(shards):
        file = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        tensors = {name: (torch.randn(shape, generator=generator) * 0.02).half() for name, shape in shard}
        save_file(tensors, directory / file, metadata={"format": "pt"})
        weight_map |= {name: file for name in tensors}
        total += sum(t.numel() * 2 for t in tensors.values())
    (directory / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=1))
    (directory / "config.json").write_text(json.dumps(CONFIG, indent=1))
    (directory / "generation_config.json").write_text(json.dumps({"chat_format": "raw", "eos_token_id": 151643}))
    (directory / "qwen.tiktoken").symlink_to(tiktoken)
    return total


def _status_bytes(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024  # reported in kB
    raise RuntimeError(f"/proc/self/status has no {field}: this benchmark needs Linux")


def child(directory: Path, dtype: str) -> None:
    """Runs in a fresh process: imports, baseline, load, report (one JSON line).

    Peak RSS is the kernel's high-water mark of this process (VmHWM), reset to the current RSS
    after the imports (`clear_refs` 5). `ru_maxrss` would not do: it carries the parent's peak
    across fork and exec.
    """
    import torch

    from workbench.models.qwen_audio import load_qwen_audio

    Path("/proc/self/clear_refs").write_text("5")
    baseline = _status_bytes("VmRSS")
    start = time.perf_counter()
    model = load_qwen_audio(directory, dtype=dtype)
    seconds = time.perf_counter() - start
    peak = _status_bytes("VmHWM")
    assert all(t.dtype == getattr(torch, dtype) for t in model.network.parameters())
    weights = sum(t.numel() * t.element_size() for t in [*model.network.parameters(), *model.network.buffers()])
    print(json.dumps({"dtype": dtype, "baseline": baseline, "peak": peak, "weights": weights, "seconds": seconds}))


def read_seconds(directory: Path) -> float:
    start = time.perf_counter()
    for shard in sorted(directory.glob("*.safetensors")):
        shard.read_bytes()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keep", type=Path, help="write (or reuse) the checkpoint here instead of a temp dir")
    parser.add_argument("--tiktoken", type=Path, default=TIKTOKEN, help="a Qwen-Audio qwen.tiktoken")
    parser.add_argument("--child", nargs=2, metavar=("DIR", "DTYPE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(Path(args.child[0]), args.child[1])
    if not args.tiktoken.is_file():  # no model hub here: the tokenizer file comes from ../shared or the caller
        print(f"skipped: {args.tiktoken} not found; pass --tiktoken PATH (the qwen.tiktoken of a Qwen-Audio checkpoint)")
        return
    with tempfile.TemporaryDirectory() as scratch:
        directory = args.keep or Path(scratch)
        directory.mkdir(parents=True, exist_ok=True)
        if not (directory / "model.safetensors.index.json").exists():
            start = time.perf_counter()
            disk = write_checkpoint(directory, args.tiktoken.resolve())
            print(f"wrote {disk / 1e9:.2f} GB (float16, {len(list(directory.glob('*.safetensors')))} shards) "
                  f"in {time.perf_counter() - start:.1f} s to {directory}")
        read_seconds(directory)  # warm the page cache, so both timings read from memory
        baseline_read = read_seconds(directory)
        print(f"baseline: reading every shard's bytes takes {baseline_read:.2f} s")
        print(f"{'dtype':>9} {'weights GB':>10} {'peak increase GB':>16} {'memory ratio':>12} {'load s':>7} {'÷ read':>7}")
        worst = 0.0
        for dtype in DTYPES:
            run = subprocess.run([sys.executable, __file__, "--child", str(directory), dtype],
                                 capture_output=True, text=True, cwd=REPO, check=True)
            result = json.loads(run.stdout.strip().splitlines()[-1])
            increase = result["peak"] - result["baseline"]
            ratio = increase / result["weights"]
            worst = max(worst, ratio)
            print(f"{dtype:>9} {result['weights'] / 1e9:>10.3f} {increase / 1e9:>16.3f} {ratio:>12.3f} "
                  f"{result['seconds']:>7.2f} {result['seconds'] / baseline_read:>7.1f}")
        print(f"worst memory ratio {worst:.3f} (goal ≤ {GOAL}): {'met' if worst <= GOAL else 'NOT met'}")


if __name__ == "__main__":
    main()
