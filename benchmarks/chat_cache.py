"""A 5-turn chat with a new 30 s clip each turn: three chats against each other (goal: turn 5 ≥ 3×).

    re-encode   `Chat(..., cache_audio=False)`: every turn encodes the clips of turns 1…n again and runs the
                LLM over the whole conversation, as the official `model.chat()` does;
    audio       `Chat(..., reuse_kv=False)`: the embeddings of earlier clips from the `AudioCache` (turn n
                encodes its own clip only), the LLM still over the whole conversation;
    audio+kv    `Chat(...)` (the default): also the LLM's keys and values of the previous turn
                (`workbench.chat_kv`), so turn n runs the LLM on its new positions only.
The three chats get the same five questions in the same process; the order of the sides rotates turn
by turn (so that load from other processes hits all alike), and the generated ids must be identical
at every turn (re-encode and audio are bit-identical, asserted; audio+kv equals them up to float rounding,
so a differing id there is reported in `kv_ids_identical_per_turn` and makes the exit status 1).
Reported: turn 5 of each side and its ratio to re-encode, and the whole conversation, in wall seconds
and in this process's CPU seconds (`time.process_time`, all its threads): on a machine loaded by other
jobs the wall time of a turn mostly measures the waiting, the CPU time what the turn costs (there, use
`--threads 1`: two threads on two busy cores multiplied every side's CPU seconds by 2-6, RESULTS.md).

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
        chats = {"re-encode": Chat(model, audio_dir=scratch, cache_audio=False),
                 "audio": Chat(model, audio_dir=scratch, reuse_kv=False),
                 "audio+kv": Chat(model, audio_dir=scratch)}
        assert chats["audio+kv"].kv_cache is not None, chats["audio+kv"].kv_note
        seconds: dict[str, list[float]] = {side: [] for side in chats}
        cpu: dict[str, list[float]] = {side: [] for side in chats}
        same_ids: list[bool] = []
        for turn, (name, question) in enumerate(zip(names, QUESTIONS), start=1):
            sides = list(chats)
            for side in sides[turn % 3:] + sides[:turn % 3]:   # rotate which side goes first
                start, start_cpu = time.perf_counter(), time.process_time()
                chats[side].ask([{"audio": name}, {"text": question}], max_new_tokens=args.new_tokens)
                seconds[side].append(time.perf_counter() - start)
                cpu[side].append(time.process_time() - start_cpu)
            turns = {side: chat.turns[-1] for side, chat in chats.items()}
            # re-encode and audio compute bit-identical numbers; audio+kv up to rounding (a near-tie could
            # flip an id, which is reported rather than ending a long run)
            assert turns["re-encode"].generated_ids == turns["audio"].generated_ids, f"turn {turn}: the ids differ"
            same_ids.append(turns["audio+kv"].generated_ids == turns["audio"].generated_ids)
            print(f"turn {turn}: {len(turns['re-encode'].input_ids)} positions; " + "; ".join(
                f"{side} {seconds[side][-1]:.2f} s ({cpu[side][-1]:.2f} s CPU, encoded {t.audios_encoded}, "
                f"LLM ran {len(t.input_ids) - t.kv_reused})" for side, t in turns.items()), flush=True)
        shutil.rmtree(scratch / "model")
    result: dict = {"model": args.model, "threads": torch.get_num_threads(), "new_tokens": args.new_tokens,
                    "kv_ids_identical_per_turn": same_ids}
    for side in chats:
        result[f"turn5_s[{side}]"], result[f"turn5_cpu_s[{side}]"] = seconds[side][-1], cpu[side][-1]
        result[f"conversation_s[{side}]"], result[f"conversation_cpu_s[{side}]"] = sum(seconds[side]), sum(cpu[side])
    for side in ("audio", "audio+kv"):   # how many times faster than re-encoding everything
        result[f"turn5_ratio[{side}]"] = seconds["re-encode"][-1] / seconds[side][-1]
        result[f"turn5_cpu_ratio[{side}]"] = cpu["re-encode"][-1] / cpu[side][-1]
        result[f"conversation_cpu_ratio[{side}]"] = sum(cpu["re-encode"]) / sum(cpu[side])
    print(json.dumps(result, indent=1))
    print("| model | threads | turn 5 s: re-encode / audio / audio+kv | ratio audio, audio+kv | "
          "turn 5 CPU s: re-encode / audio / audio+kv | CPU ratio audio, audio+kv | conversation CPU ratio |")
    print(f"| {args.model} | {result['threads']} | " + " / ".join(f"{seconds[s][-1]:.2f}" for s in chats) +
          f" | {result['turn5_ratio[audio]']:.2f}×, {result['turn5_ratio[audio+kv]']:.2f}× | " +
          " / ".join(f"{cpu[s][-1]:.2f}" for s in chats) +
          f" | {result['turn5_cpu_ratio[audio]']:.2f}×, **{result['turn5_cpu_ratio[audio+kv]']:.2f}×** | "
          f"{result['conversation_cpu_ratio[audio]']:.2f}×, {result['conversation_cpu_ratio[audio+kv]']:.2f}× |")
    return 0 if all(same_ids) else 1


if __name__ == "__main__":
    sys.exit(main())
