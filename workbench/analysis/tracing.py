"""Causal tracing with corrupted audio: which layer, at which positions and which seconds of the
clip, carries what the model heard.

    noisy = corrupt_audio(clip, "noise", snr_db=0)            # or "clip", "shift", "band"
    result = causal_trace(model, wb.preset("librispeech"), clip, corrupt=noisy, bins=8)
    result.to_pandas()        # one row per layer × column: score, delta, recovery
    result.plot()             # layer × (tags | audio t0…t7 | text | answer)
    many = causal_trace_many(model, prompt, clips, corrupt="noise")   # mean and bootstrap CI per cell

Causal tracing (Meng et al., "Locating and Editing Factual Associations in GPT", 2022) runs the model
twice, once on the clean input and once on a corrupted one, then runs the corrupted input again
with the clean residual stream of one layer restored at some positions. Here the corrupted input
is the AUDIO (the prompt is the same): noise at a given SNR, another clip, a time shift, or a
frequency band removed (`corrupt_audio`). The score is log p(clean answer) (summed over its
tokens; the answer defaults to the clean run's greedy output), and recovery is
(restored − corrupt) / (clean − corrupt): 1 where restoring those positions at that layer brings
back everything the corruption took.

Columns: the prompt's tags, the audio positions binned by time (`bins` equal shares of the audio
span, each labelled by its seconds; `<audio>` goes with the first bin, `</audio>` with the last),
the prompt's free text and the answer. Unlike `patch_sweep` between two prompts over the same clip,
where the audio column is a null check, here the audio is what differs. Measured on nano (speech_en,
English transcription, noise at 0 dB: log p of the answer −2.3 clean, −16.2 corrupted): the audio
bins recover up to 0.4 in the first two layers, the answer positions 0.83 at layer 2 and 1.00 at the
last layer (whose output there gives every scored logit but the first answer token's).

`stack` says where: the token sequence (the default where the audio is spliced into the LLM's
input: Qwen-Audio v1, -Chat, nano), or the audio encoder, its frames binned by time ("encoder",
the default for Whisper, whose decoder reads the audio by cross-attention; `tracing_encoder`, which
also says how Whisper's padding to 30 s is handled). Restoring every position (frame) at a layer
gives the clean score exactly; restoring none gives the corrupted one (`tests/test_tracing.py`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch

from workbench.analysis.capabilities import require
from workbench.analysis.interventions import (
    answer_rows,
    check_layer,
    check_layers,
    encode_text,
    hooks,
    logprob,
    patcher,
    prompt_inputs,
    recorder,
    short_text,
)
from workbench.analysis.positions import decode_ids, label_positions
from workbench.analysis.stats import mean_ci_columns
from workbench.analysis.tracing_encoder import encoder_columns, trace_stack
from workbench.audio import SAMPLE_RATE, encoder_frames, load_audio
from workbench.errors import AudioError, PatchingError
from workbench.figures.tracing import plot_causal_trace, plot_causal_trace_many
from workbench.models.adapter import Stack

__all__ = ["CausalTrace", "CausalTraceMany", "causal_trace", "causal_trace_many", "corrupt_audio",
           "measured_snr_db", "restored_score"]

HOW = ("noise", "clip", "shift", "band")
VALUES = ("recovery", "delta", "score")


# ---------------------------------------------------------------------------------------------
# Corrupted audio


def measured_snr_db(clean: np.ndarray, corrupted: np.ndarray) -> float:
    """10·log10(clean power / power of what the corruption added), in dB."""
    clean, corrupted = np.asarray(clean, np.float64), np.asarray(corrupted, np.float64)
    return float(10 * np.log10(np.sum(clean ** 2) / np.sum((corrupted - clean) ** 2)))


def _samples(audio: Any) -> np.ndarray:
    """16 kHz float32 samples of a path, an `(array, rate)` pair or a bare array (16 kHz)."""
    bare = isinstance(audio, (np.ndarray, torch.Tensor))
    return np.asarray(load_audio(audio, src_sr=SAMPLE_RATE if bare else None), dtype=np.float32)


def corrupt_audio(waveform: Any, how: str = "noise", *, snr_db: float = 0.0, other: Any = None,
                  shift_s: float = 0.5, band_hz: tuple[float, float] = (300.0, 3400.0), seed: int = 0) -> np.ndarray:
    """A corrupted copy of a 16 kHz clip (a path, an `(array, rate)` pair or an array), as long as it.

    how="noise": white Gaussian noise (seeded) scaled to exactly `snr_db` over the whole clip;
      "clip": `other` (another clip) in its place, cut to this clip's length or zero-padded to it;
      "shift": the clip delayed by `shift_s` seconds (advanced when negative), circularly, so that no
      sample is lost and the length is kept; "band": the frequencies in `band_hz` = (low, high) Hz
      removed (their FFT bins zeroed, so nothing of the band is left).
    """
    clean = _samples(waveform)
    if how not in HOW:
        raise ValueError(f"how={how!r}: choose one of {HOW}")
    if how == "noise":
        power = float(np.mean(clean.astype(np.float64) ** 2))
        if power == 0 or not np.isfinite(snr_db):
            raise AudioError(f"cannot add noise at snr_db={snr_db!r} to this clip: it is silent or the SNR is not "
                             "finite; give a clip with sound and a finite snr_db")
        noise = np.random.default_rng(seed).standard_normal(len(clean))
        noise *= np.sqrt(power / 10 ** (snr_db / 10) / np.mean(noise ** 2))   # the drawn noise's own power
        return (clean + noise).astype(np.float32)
    if how == "clip":
        if other is None:
            raise ValueError("how='clip' replaces the clip by another: pass other= a path or an array")
        replacement = _samples(other)[:len(clean)]
        return np.pad(replacement, (0, len(clean) - len(replacement)))
    if how == "shift":
        samples = int(round(shift_s * SAMPLE_RATE))
        if samples % len(clean) == 0:
            raise ValueError(f"shift_s={shift_s!r} moves the {len(clean) / SAMPLE_RATE:.2f} s clip onto itself: "
                             "give a shift that is not a multiple of its length (and not 0)")
        return np.roll(clean, samples)
    low, high = (float(f) for f in band_hz)
    if not 0 <= low < high <= SAMPLE_RATE / 2:
        raise ValueError(f"band_hz={band_hz!r}: give (low, high) with 0 ≤ low < high ≤ {SAMPLE_RATE // 2} Hz")
    spectrum = np.fft.rfft(clean.astype(np.float64))
    frequencies = np.fft.rfftfreq(len(clean), 1 / SAMPLE_RATE)
    spectrum[(frequencies >= low) & (frequencies <= high)] = 0
    return np.fft.irfft(spectrum, n=len(clean)).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# The clean run, the corrupted run, and restoring


@dataclass
class _Runs:
    """One prompt on the clean and on the corrupted clip, the answer appended to both."""

    adapter: Any
    stack: Stack                       # where the clean residual stream is restored: the sequence or the encoder
    layers: dict[int, torch.Tensor]    # the clean run's residual stream, recorded at the chosen layers
    clean_inputs: Any
    corrupt_inputs: Any
    corrupt_audio: Any                 # the corrupted clip, encoded
    rows: slice
    ids: list[int]
    table: pd.DataFrame
    clean: float
    corrupt: float
    measure: str
    clip_frames: int                   # encoder frames of the clip (the window's may be more: padding)
    corrupt_layers: dict[int, torch.Tensor]   # the corrupted run's encoder layers, where `encode_after` is declared

    @classmethod
    @torch.no_grad()
    def build(cls, model: Any, prompt: Any, clean_audio: Any, corrupt: Any, stack: Stack, layers: Sequence[int],
              continuation: str | None, max_new_tokens: int, audio_dir: Any, seed: int) -> _Runs:
        adapter = require(model, "causal_trace")
        encoder = stack is adapter.encoder
        if isinstance(clean_audio, (list, tuple)) and not _is_pair(clean_audio):
            raise PatchingError("causal_trace takes one clean clip (a path or an array): trace clips one at a time, "
                                "or over many with causal_trace_many")
        clean_wave = model.read_audio(clean_audio, audio_dir)
        named = isinstance(corrupt, str) and corrupt in HOW
        corrupt_wave = corrupt_audio(clean_wave, corrupt, seed=seed) if named else model.read_audio(corrupt, audio_dir)
        prompts = [prompt_inputs(model, prompt, [wave], None) for wave in (clean_wave, corrupt_wave)]
        if len(prompts[0].audios) != 1:
            raise PatchingError(f"the prompt holds {len(prompts[0].audios)} audios: causal_trace corrupts one, so "
                                "give a prompt with one <audio> (or none: it is put in front)")
        n_clean, n_corrupt = (encoder_frames(p.audios[0].n_samples) if encoder else p.audios[0].n_positions
                              for p in prompts)
        if n_clean != n_corrupt or prompts[0].length != prompts[1].length:
            raise AudioError(
                f"the corrupted clip gives {n_corrupt} {'encoder frames' if encoder else 'audio positions'} "
                f"({len(corrupt_wave) / SAMPLE_RATE:.2f} s) and the "
                f"clean one {n_clean} ({len(clean_wave) / SAMPLE_RATE:.2f} s): causal tracing restores position by "
                "position, so both clips need the same length; corrupt_audio keeps it, or cut / np.pad the other clip "
                "to the clean clip's number of samples")
        interventions, store = adapter.interventions, {}
        # Each hooked layer keeps its last call: an encoder layer runs in `encode` only, a sequence
        # layer last in the scored clean run (after any greedy decoding).
        with hooks([(stack.layers[i], recorder(store, i, False), False) for i in layers]):
            clean_audio = interventions.encode(prompts[0])
            ids = (encode_text(model, continuation) if continuation is not None
                   else interventions.greedy(prompts[0], clean_audio, max_new_tokens))
            if not ids:
                raise PatchingError("the continuation to score is empty: pass continuation= some text")
            runs, rows = [p.extended(ids) for p in prompts], answer_rows(prompts[0].length, ids)
            clean = logprob(interventions.run(runs[0], clean_audio, rows), ids)
        corrupted: dict[int, torch.Tensor] = {}
        after = encoder and interventions.encode_after is not None
        with hooks([(stack.layers[i], recorder(corrupted, i, False), False) for i in layers] if after else []):
            corrupt_encoded = interventions.encode(prompts[1])
        corrupt_score = logprob(interventions.run(runs[1], corrupt_encoded, rows), ids)
        table = label_positions(model, runs[0], n_prompt=prompts[0].length)
        return cls(adapter, stack, store, *runs, corrupt_encoded, rows, list(ids), table, clean, corrupt_score,
                   f"log p({short_text(decode_ids(model, ids))})", n_clean, corrupted)

    @property
    def n_positions(self) -> int:
        """Positions (frames) a restore can pick: the sequence's, or the encoder's whole window."""
        return next(iter(self.layers.values())).shape[1] if self.stack is self.adapter.encoder else len(self.table)

    def columns(self, bins: int) -> list[tuple[str, str, tuple[float, float], np.ndarray]]:
        if self.stack is self.adapter.encoder:
            return encoder_columns(self.clip_frames, self.n_positions, bins, self.adapter.frame_seconds)
        return _columns(self.table, bins)

    @torch.no_grad()
    def restored(self, layer: int, positions: np.ndarray) -> float:
        """The corrupted run's score with the clean residual stream of `layer` at `positions` (the
        corrupted clip encoded again when they are encoder frames: from that layer on where the
        family declares `encode_after`, else all of it with the frames patched by a hook)."""
        interventions, encoder = self.adapter.interventions, self.stack is self.adapter.encoder
        restore = patcher(self.layers[layer], np.stack([positions, positions], axis=1), False)
        hooked = [(self.stack.layers[layer], restore, False)] if len(positions) and layer not in self.corrupt_layers else []
        with hooks(hooked):     # on the sequence's layer during the run, or the encoder's during a re-encode
            if not len(positions) or not encoder:
                encoded = self.corrupt_audio
            elif hooked:
                encoded = interventions.encode(self.corrupt_inputs)
            else:
                encoded = interventions.encode_after(self.corrupt_inputs, layer,
                                                     restore(None, (), self.corrupt_layers[layer]))
            return logprob(interventions.run(self.corrupt_inputs, encoded, self.rows), self.ids)


def _is_pair(audio: Any) -> bool:
    return isinstance(audio, tuple) and len(audio) == 2 and np.isscalar(audio[1])


def _columns(table: pd.DataFrame, bins: int) -> list[tuple[str, str, tuple[float, float], np.ndarray]]:
    """(name, kind, seconds, positions) per column: tags, t0…t{bins-1}, text, answer (those present;
    no bins where the sequence has no audio positions: Whisper's decoder)."""
    prompt, output = (table["part"] == "prompt").to_numpy(), (table["part"] == "output").to_numpy()
    group = table["group"].to_numpy()
    none = (np.nan, np.nan)
    columns = [("tags", "tags", none, np.flatnonzero(prompt & (group == "tags")))]
    tokens = np.flatnonzero((table["kind"] == "audio").to_numpy())
    if len(tokens) and (isinstance(bins, bool) or not isinstance(bins, (int, np.integer)) or not 1 <= bins <= len(tokens)):
        raise PatchingError(f"bins={bins!r}: give an int from 1 to the clip's {len(tokens)} audio positions")
    shares = np.array_split(tokens, bins) if len(tokens) else []
    if shares:
        shares[0] = np.concatenate([np.flatnonzero((table["kind"] == "audio_bos").to_numpy()), shares[0]])
        shares[-1] = np.concatenate([shares[-1], np.flatnonzero((table["kind"] == "audio_eos").to_numpy())])
    for k, share in enumerate(shares):
        times = table.loc[share, ["start_s", "end_s"]].to_numpy(float)
        columns.append((f"t{k}", "audio", (float(np.nanmin(times[:, 0])), float(np.nanmax(times[:, 1]))), share))
    columns.append(("text", "text", none, np.flatnonzero(prompt & (group == "text"))))
    columns.append(("answer", "answer", none, np.flatnonzero(output)))
    return [c for c in columns if len(c[3])]


# ---------------------------------------------------------------------------------------------
# Results


@dataclass(frozen=True)
class CausalTrace:
    """Scores of the corrupted run with the clean residual stream restored, layer × column."""

    stack: str                               # "llm", "decoder" or "encoder"
    layers: tuple[int, ...]
    columns: tuple[str, ...]                 # "tags", "t0", …, "text", "answer"; encoder: "t0", …, "pad"
    kinds: tuple[str, ...]                   # per column: "tags", "audio", "text", "answer" or "padding"
    seconds: tuple[tuple[float, float], ...]  # per column: the audio bin's (or padding's) (start, end) s; else NaN
    positions: tuple[tuple[int, ...], ...]   # per column: the sequence positions (encoder frames) restored
    scores: np.ndarray                       # (layers, columns)
    clean: float
    corrupt: float
    measure: str
    prompt: str
    corruption: str

    @property
    def delta(self) -> np.ndarray:
        return self.scores - self.corrupt

    @property
    def recovery(self) -> np.ndarray:
        """(restored − corrupt) / (clean − corrupt); NaN when the corruption changed nothing."""
        gap = self.clean - self.corrupt
        return self.delta / gap if gap != 0 else np.full(self.scores.shape, np.nan)

    def column_labels(self) -> list[str]:
        """The columns as a figure shows them: audio bins (and padding) by their seconds."""
        return [f"{a:.2f}–{b:.2f} s" if kind == "audio" else f"pad {a:.2f}–{b:.0f} s" if kind == "padding" else name
                for name, kind, (a, b) in zip(self.columns, self.kinds, self.seconds)]

    def to_pandas(self) -> pd.DataFrame:
        """One row per layer × column: layer, column, kind, start_s, end_s, score, delta, recovery."""
        recovery = self.recovery
        return pd.DataFrame([{"layer": self.layers[i], "column": self.columns[j], "kind": self.kinds[j],
                              "start_s": self.seconds[j][0], "end_s": self.seconds[j][1], "score": float(value),
                              "delta": float(value - self.corrupt), "recovery": float(recovery[i, j])}
                             for (i, j), value in np.ndenumerate(self.scores)])

    def plot(self, value: str = "recovery", **options: Any):
        """Heatmap layer × (tags | audio bins | text | answer) (workbench.figures.plot_causal_trace)."""
        return plot_causal_trace(self, value=value, **options)


@dataclass(frozen=True)
class CausalTraceMany:
    """One `CausalTrace` per clip (the same prompt, layers and bins), averaged per cell."""

    traces: tuple[CausalTrace, ...]

    def to_pandas(self) -> pd.DataFrame:
        """Every clip's cells: `CausalTrace.to_pandas()` with a `clip` column (0, 1, …)."""
        return pd.concat([t.to_pandas().assign(clip=k) for k, t in enumerate(self.traces)], ignore_index=True)

    def summary(self, value: str = "recovery") -> pd.DataFrame:
        """Per layer × column: the mean of `value` over clips and its bootstrap 95 % CI
        (`workbench.analysis.stats.mean_ci_columns`): layer, column, kind, mean, ci_low, ci_high, n."""
        if value not in VALUES:
            raise ValueError(f"value={value!r}: choose one of {VALUES}")
        table = self.to_pandas()
        if value == "recovery" and table["recovery"].isna().any():
            flat = sorted(set(table.loc[table["recovery"].isna(), "clip"]))
            raise PatchingError(f"clips {flat} score the same clean and corrupted: their recovery is undefined; "
                                "average value='delta', or corrupt those clips more")
        summary = mean_ci_columns(table, ["layer", "column"], value)
        return summary.assign(kind=summary["column"].map(dict(zip(self.traces[0].columns, self.traces[0].kinds))))

    def plot(self, value: str = "recovery", **options: Any):
        """Heatmap of the mean per cell and the mean with its CI along the columns, one line per layer."""
        return plot_causal_trace_many(self, value=value, **options)


# ---------------------------------------------------------------------------------------------
# The verbs


def restored_score(model: Any, prompt: Any, clean_audio: Any, corrupt: Any = "noise", *, layer: int,
                   positions: Any = "all", stack: str | None = None, continuation: str | None = None,
                   max_new_tokens: int = 48, audio_dir: Any = None, seed: int = 0) -> float:
    """The corrupted run's score with `layer`'s clean residual stream restored at `positions`
    ("all", a column name of `causal_trace` with the default bins, or position ints, encoder frames
    on the encoder; [] restores none)."""
    chosen = trace_stack(require(model, "causal_trace"), stack)
    layer = check_layer(chosen, layer)
    runs = _Runs.build(model, prompt, clean_audio, corrupt, chosen, [layer], continuation, max_new_tokens,
                       audio_dir, seed)
    if isinstance(positions, str):
        columns = {name: picked for name, _, _, picked in runs.columns(8)}
        if positions != "all" and positions not in columns:
            raise PatchingError(f"positions={positions!r}: give 'all', one of {list(columns)} or position ints")
        picked = np.arange(runs.n_positions) if positions == "all" else columns[positions]
    else:
        picked = np.asarray(positions, dtype=int).ravel()
        if ((picked < 0) | (picked >= runs.n_positions)).any():
            raise PatchingError(f"positions {picked.tolist()[:8]} fall outside the {runs.n_positions} positions run")
    return runs.restored(layer, picked)


def causal_trace(model: Any, prompt: Any, clean_audio: Any, corrupt: Any = "noise", *,
                 layers: Sequence[int] | None = None, bins: int = 8, stack: str | None = None,
                 continuation: str | None = None, max_new_tokens: int = 48, audio_dir: Any = None,
                 seed: int = 0) -> CausalTrace:
    """Restore the clean residual stream at every layer (or `layers`) × column (module docstring).

    corrupt: a corrupted clip (a path or an array as long as `clean_audio`, e.g. from
      `corrupt_audio`), or one of "noise", "clip", "shift", "band" for `corrupt_audio`'s defaults
      (noise at 0 dB SNR drawn with `seed`, …; "clip" needs the other clip: pass it corrupted).
    stack: "encoder" (frames binned by time, then Whisper's padding) or the token sequence's name
      ("llm", "decoder"); default the encoder for Whisper, else the token sequence (`tracing_encoder`).
    continuation: the answer to score; default the clean run's greedy output.
    """
    traced = trace_stack(require(model, "causal_trace"), stack)
    chosen = check_layers(traced, layers)
    runs = _Runs.build(model, prompt, clean_audio, corrupt, traced, chosen, continuation, max_new_tokens,
                       audio_dir, seed)
    columns = runs.columns(bins)
    scores = np.array([[runs.restored(layer, picked) for _, _, _, picked in columns] for layer in chosen])
    how = corrupt if isinstance(corrupt, str) and corrupt in HOW else "the corrupted clip given"
    return CausalTrace(traced.name, tuple(chosen), tuple(c[0] for c in columns),
                       tuple(c[1] for c in columns), tuple(c[2] for c in columns),
                       tuple(tuple(int(p) for p in c[3]) for c in columns), scores, runs.clean, runs.corrupt,
                       runs.measure, runs.clean_inputs.text, how)


def causal_trace_many(model: Any, prompt: Any, clips: Sequence[Any], corrupt: Any = "noise", *,
                      layers: Sequence[int] | None = None, bins: int = 8, stack: str | None = None,
                      continuations: Sequence[str] | None = None, max_new_tokens: int = 48, audio_dir: Any = None,
                      seed: int = 0) -> CausalTraceMany:
    """`causal_trace` over many clips. corrupt: one of `corrupt_audio`'s names (clip k drawn with
    seed + k), or a list with one corrupted clip per clip. continuations: one answer per clip
    (default each clean run's greedy output)."""
    clips = list(clips)
    if not clips:
        raise PatchingError("causal_trace_many needs at least one clip")
    named = isinstance(corrupt, str) and corrupt in HOW
    if not named and (not isinstance(corrupt, (list, tuple)) or len(corrupt) != len(clips)):
        raise PatchingError(f"corrupt={corrupt!r:.60}: give one of {HOW}, or a list of {len(clips)} corrupted clips, "
                            "one per clip")
    if continuations is not None and len(continuations) != len(clips):
        raise PatchingError(f"{len(continuations)} continuations for {len(clips)} clips: give one per clip, or none")
    traces = tuple(causal_trace(model, prompt, clip, corrupt if named else corrupt[k], layers=layers, bins=bins,
                                stack=stack, continuation=None if continuations is None else continuations[k],
                                max_new_tokens=max_new_tokens, audio_dir=audio_dir, seed=seed + k)
                   for k, clip in enumerate(clips))
    return CausalTraceMany(traces)
