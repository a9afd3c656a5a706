"""A 5-turn chat with a new 30 s clip each turn: the audio cache against re-encoding every turn (goal ≥ 3×).

`Chat` keeps the embeddings of the clips it has encoded (`workbench.chat.AudioCache`), so turn n
runs the encoder on its own clip only; `Chat(..., cache_audio=False)` re-encodes the clips of turns
1…n at turn n, as the official `model.chat()` does. Both chats get the same five questions in the same
process; the sides alternate turn by turn (so that load from other processes hits both alike), and
the generated ids must be identical at every turn (they are computed from bit-identical embeddings).
Reported: turn 5 on each side and their ratio, and the whole conversation, in wall seconds and in
this process's CPU seconds (`time.process_time`, all its threads): on a machine loaded by other jobs the
wall time of a turn mostly measures the waiting (the first run, at a load average of 22 on 2 cores,
took longer for turn 1 with the cache than without, the same work), the CPU time what the turn costs.

Clips: five 30 s windows built from ../shared/audio: three cut from the 96 s piano piece
(music.wav), the JFK speech looped, and the LibriSpeech, Spanish and Chinese clips joined and
looped. Five clips are 5 × 752 audio positions, more than the 2048 positions up to which the model
equals the official one; the benchmark therefore loads a copy of the checkpoint whose config
allows 4096 positions (nano: max_position_embeddings; the fixture: dynamic NTK and logn off). The
numbers are timings, not outputs, so this changes nothing that is measured.

    python benchmarks/chat_cache.py [--model nano|fixture] [--new-tokens 8] [--threads N]
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile
import torch

from workbench.audio import N_SAMPLES, SAMPLE_RATE, load_audio
from workbench.chat import Chat
from workbench.models.qwen_audio import load_qwen_audio
from workbench.models.qwen_audio.nano import NANO_DIR

SHARED = Path(__file__).resolve().parents[2] / "shared"
FIXTURE = SHARED / "fixtures" / "qwen_audio_v1_tiny" / "checkpoint"
QUESTIONS = ("What can you hear?", "What does the person say?", "Describe the music.",
             "What language is spoken?", "Compare it with the first clip.")


def thirty_second_clips(audio_dir: Path) -> list[np.ndarray]:
    """Five 30 s clips of real audio: three windows of the piano piece, two speech loops."""
    music = load_audio(audio_dir / "music.wav", on_long="chunk")
    pieces = [chunk.audio for chunk in music if len(chunk.audio) == N_SAMPLES][:3]
    jfk = load_audio(audio_dir / "jfk.flac")
    mixed = np.concatenate([load_audio(audio_dir / name) for name in
                            ("1272-128104-0000.flac", "es.mp3", "zh_ni_mei_shi_ba_relaxed.wav")])
    loops = [np.tile(clip, N_SAMPLES // len(clip) + 1)[:N_SAMPLES] for clip in (jfk, mixed)]
    clips = [pieces[0], loops[0], pieces[1], loops[1], pieces[2]]
    assert all(len(clip) == N_SAMPLES for clip in clips)
    return clips


def long_context_copy(model: str, folder: Path) -> Path:
    """The checkpoint with a config that allows 4096 positions (weights linked, not copied)."""
    source = NANO_DIR if model == "nano" else FIXTURE
    folder.mkdir()
    for file in source.iterdir():
        if file.is_file() and file.name != "config.json":
            (folder / file.name).symlink_to(file)
    config = json.loads((source / "config.json").read_text())
    config.update(max_position_embeddings=4096, seq_length=4096, use_dynamic_ntk=False, use_logn_attn=False)
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    return folder


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=("nano", "fixture"), default="nano")
    parser.add_argument("--new-tokens", type=int, default=8, help="greedy tokens per reply (default 8)")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if not (SHARED / "audio" / "music.wav").is_file():
        print(f"skipped: {SHARED / 'audio'} is missing (the benchmark builds its 30 s clips from it)")
        return 0
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        model = load_qwen_audio(long_context_copy(args.model, scratch / "model"), chat=True)
        names = []
        for k, clip in enumerate(thirty_second_clips(SHARED / "audio"), start=1):
            soundfile.write(scratch / f"clip{k}.wav", clip, SAMPLE_RATE, subtype="FLOAT")
            names.append(f"clip{k}.wav")
        chats = {"cache": Chat(model, audio_dir=scratch), "re-encode": Chat(model, audio_dir=scratch, cache_audio=False)}
        seconds: dict[str, list[float]] = {side: [] for side in chats}
        cpu: dict[str, list[float]] = {side: [] for side in chats}
        for turn, (name, question) in enumerate(zip(names, QUESTIONS), start=1):
            order = list(chats) if turn % 2 else list(chats)[::-1]   # alternate which side goes first
            for side in order:
                start, start_cpu = time.perf_counter(), time.process_time()
                chats[side].ask([{"audio": name}, {"text": question}], max_new_tokens=args.new_tokens)
                seconds[side].append(time.perf_counter() - start)
                cpu[side].append(time.process_time() - start_cpu)
            fast, slow = (chats[side].turns[-1] for side in chats)
            assert fast.generated_ids == slow.generated_ids, f"turn {turn}: the generated ids differ"
            print(f"turn {turn}: {fast.input_ids.__len__()} positions, encoded {fast.audios_encoded} vs "
                  f"{slow.audios_encoded} clips: cache {seconds['cache'][-1]:.2f} s ({cpu['cache'][-1]:.2f} s CPU), "
                  f"re-encode {seconds['re-encode'][-1]:.2f} s ({cpu['re-encode'][-1]:.2f} s CPU)", flush=True)
        shutil.rmtree(scratch / "model")
    result = {"model": args.model, "threads": torch.get_num_threads(), "new_tokens": args.new_tokens,
              "turn5_cache_s": seconds["cache"][-1], "turn5_reencode_s": seconds["re-encode"][-1],
              "turn5_ratio": seconds["re-encode"][-1] / seconds["cache"][-1],
              "conversation_cache_s": sum(seconds["cache"]), "conversation_reencode_s": sum(seconds["re-encode"]),
              "conversation_ratio": sum(seconds["re-encode"]) / sum(seconds["cache"]),
              "turn5_cache_cpu_s": cpu["cache"][-1], "turn5_reencode_cpu_s": cpu["re-encode"][-1],
              "turn5_cpu_ratio": cpu["re-encode"][-1] / cpu["cache"][-1],
              "conversation_cpu_ratio": sum(cpu["re-encode"]) / sum(cpu["cache"])}
    print(json.dumps(result, indent=1))
    print(f"| {args.model} | {result['threads']} | {result['turn5_reencode_s']:.2f} | {result['turn5_cache_s']:.2f} | "
          f"{result['turn5_ratio']:.2f}× | {result['turn5_reencode_cpu_s']:.2f} | {result['turn5_cache_cpu_s']:.2f} | "
          f"**{result['turn5_cpu_ratio']:.2f}×** | {result['conversation_cpu_ratio']:.2f}× |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
