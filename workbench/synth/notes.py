"""Single notes rendered with FluidSynth and the General MIDI soundfont, NSynth-style (MNA).

Every note has an exact MIDI pitch, a velocity from NSynth's five values and an NSynth instrument
family (GM programs grouped by family). Notes are held for 1.5 s in a 2 s clip (NSynth holds 3 s
in 4 s; halved to keep clips short). Many notes are rendered in one fluidsynth call — loading the
148 MB soundfont costs ~0.5 s, rendering a note ~1 ms — each in its own slot that ends with MIDI
"all sound off", so no note hears another. Reverb and chorus are off and output is float, so
rendering is deterministic.

`<|sonic|>` qualities are measured on the rendered note, with NSynth's definitions scaled to the
shorter clip: `fast_decay` (the envelope has fallen 20 dB before the note-off) and `long_release`
(still above −26 dB at the end of the clip). NSynth's other eight qualities are not produced.
"""
from __future__ import annotations

import shutil
import struct
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from .speech import MissingToolError

SAMPLE_RATE = 16_000
SOUNDFONT = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")
CLIP_SECONDS = 2.0
NOTE_OFF_SECONDS = 1.5
# Slot: the clip, "all sound off" 0.25 s later, then 0.25 s of silence (fluidsynth fades the cut
# over one 64-sample block, which must not reach the next note). A multiple of 64 samples.
_SLOT_SECONDS = 2.5
_SOUND_OFF_SECONDS = 2.25
_TICKS_PER_SECOND = 960  # 480 ticks a quarter note at the default 120 bpm
# FluidSynth's default master gain (0.2) peaks near 0.16 at velocity 127: a fixed gain keeps the
# velocity audible as level (no per-note normalisation) and uses more of the 16-bit range.
GAIN = 4.0

VELOCITIES = (25, 50, 75, 100, 127)  # NSynth's velocities
# NSynth family → (GM programs, 0-based; MIDI pitch range where those programs sound natural)
FAMILIES: dict[str, tuple[tuple[int, ...], tuple[int, int]]] = {
    "keyboard": ((0, 1, 4), (36, 90)),
    "mallet": ((8, 11, 12, 13), (55, 96)),
    "organ": ((20, 21), (36, 84)),  # not drawbar/church organs: their 16' ranks sound an octave low
    "guitar": ((24, 25, 26), (40, 81)),
    "bass": ((32, 33, 34, 38), (28, 55)),
    "string": ((40, 41, 42, 48), (48, 84)),
    "brass": ((56, 57, 60, 61), (46, 82)),
    "reed": ((64, 65, 68, 71), (50, 84)),
    "flute": ((72, 73, 74, 75), (60, 96)),
    "vocal": ((52, 53, 54), (48, 79)),
    "synth_lead": ((80, 82, 83), (48, 84)),  # not 81 (saw): parts of its range sound an octave low
}
QUALITIES = ("fast_decay", "long_release")


@dataclass(frozen=True)
class Note:
    program: int  # GM program, 0-based
    pitch: int  # MIDI note number
    velocity: int

    @property
    def family(self) -> str:
        for family, (programs, _) in FAMILIES.items():
            if self.program in programs:
                return family
        raise ValueError(f"GM program {self.program} belongs to no instrument family here; "
                         f"use one of {sorted(p for programs, _ in FAMILIES.values() for p in programs)}")

    @property
    def key(self) -> str:
        """Program and pitch: the content key that splits notes (velocity varies freely)."""
        return f"{self.program}:{self.pitch}"


def sample_note(rng: np.random.Generator, family: str | None = None) -> Note:
    """A random note (of `family`, or of a random family)."""
    family = family if family is not None else list(FAMILIES)[rng.integers(len(FAMILIES))]
    if family not in FAMILIES:
        raise ValueError(f"unknown instrument family {family!r}; families: {', '.join(FAMILIES)}")
    programs, (low, high) = FAMILIES[family]
    return Note(int(programs[rng.integers(len(programs))]), int(rng.integers(low, high + 1)),
                int(VELOCITIES[rng.integers(len(VELOCITIES))]))


def _vlq(value: int) -> bytes:
    """A MIDI variable-length quantity."""
    out = [value & 0x7F]
    value >>= 7
    while value:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    return bytes(reversed(out))


def midi_file(notes: list[Note]) -> bytes:
    """A format-0 Standard MIDI File playing `notes` one per slot on channel 0."""
    hold = round(NOTE_OFF_SECONDS * _TICKS_PER_SECOND)
    sound_off = round(_SOUND_OFF_SECONDS * _TICKS_PER_SECOND)
    rest = round(_SLOT_SECONDS * _TICKS_PER_SECOND) - sound_off
    events = b""
    for i, note in enumerate(notes):
        if not (0 <= note.pitch < 128 and 1 <= note.velocity < 128 and 0 <= note.program < 128):
            raise ValueError(f"{note} is outside MIDI's ranges (pitch 0–127, velocity 1–127, program 0–127)")
        events += _vlq(rest if i else 0) + bytes([0xC0, note.program])
        events += _vlq(0) + bytes([0xB0, 91, 0]) + _vlq(0) + bytes([0xB0, 93, 0])  # no reverb/chorus send
        events += _vlq(0) + bytes([0x90, note.pitch, note.velocity])
        events += _vlq(hold) + bytes([0x80, note.pitch, 0])
        events += _vlq(sound_off - hold) + bytes([0xB0, 120, 0])  # all sound off
    events += _vlq(rest) + b"\xff\x2f\x00"  # end of track
    header = b"MThd" + struct.pack(">IHHH", 6, 0, 1, _TICKS_PER_SECOND // 2)
    return header + b"MTrk" + struct.pack(">I", len(events)) + events


def render_notes(notes: list[Note], soundfont: Path = SOUNDFONT) -> list[np.ndarray]:
    """Each note as a CLIP_SECONDS float32 clip at 16 kHz, from one fluidsynth run."""
    if not notes:
        return []
    fluidsynth = shutil.which("fluidsynth")
    if fluidsynth is None:
        raise MissingToolError("fluidsynth is not installed; the synthetic corpus needs it for notes: "
                               "apt-get install --no-install-recommends fluidsynth fluid-soundfont-gm")
    if not Path(soundfont).exists():
        raise MissingToolError(f"soundfont {soundfont} not found; install the General MIDI soundfont with "
                               "apt-get install fluid-soundfont-gm, or pass soundfont=PATH to an .sf2")
    with tempfile.TemporaryDirectory() as tmp:
        midi, wav = Path(tmp) / "notes.mid", Path(tmp) / "notes.wav"
        midi.write_bytes(midi_file(notes))
        result = subprocess.run([fluidsynth, "-ni", "-q", "-R", "0", "-C", "0", "-O", "float", "-r",
                                 str(SAMPLE_RATE), "-F", str(wav), str(soundfont), str(midi)],
                                capture_output=True, check=False)
        if result.returncode != 0 or not wav.exists():
            raise RuntimeError(f"fluidsynth failed: {result.stderr.decode(errors='replace').strip()}")
        stereo, rate = sf.read(wav, dtype="float32", always_2d=True)
    if rate != SAMPLE_RATE:
        raise RuntimeError(f"fluidsynth wrote {rate} Hz audio, expected {SAMPLE_RATE} Hz")
    mono = stereo.mean(axis=1) * GAIN
    if np.max(np.abs(mono)) >= 1.0:
        raise RuntimeError(f"a rendered note peaks at {np.max(np.abs(mono)):.2f} after GAIN={GAIN} and "
                           "would clip; lower notes.GAIN")
    slot, clip = round(_SLOT_SECONDS * SAMPLE_RATE), round(CLIP_SECONDS * SAMPLE_RATE)
    clips = [mono[i * slot:i * slot + clip] for i in range(len(notes))]
    if any(len(c) != clip for c in clips):
        raise RuntimeError(f"fluidsynth rendered {len(mono)} samples for {len(notes)} notes; "
                           f"expected at least {len(notes) * slot}")
    return [c.astype(np.float32) for c in clips]


def qualities(clip: np.ndarray) -> tuple[str, ...]:
    """The measurable NSynth qualities of a rendered note (see the module docstring)."""
    frame = 320  # 20 ms
    n = len(clip) // frame
    rms = np.sqrt(np.mean(clip[:n * frame].reshape(n, frame).astype(np.float64) ** 2, axis=1))
    peak = rms.max()
    if peak == 0:
        return ()
    off = round(NOTE_OFF_SECONDS * SAMPLE_RATE / frame)
    found = []
    if rms[off - 10:off].mean() < peak * 0.1:  # −20 dB over the 200 ms before note-off
        found.append("fast_decay")
    if rms[-5:].mean() > peak * 0.05:  # above −26 dB over the last 100 ms
        found.append("long_release")
    return tuple(found)


def note_reference(note: Note, sonic: tuple[str, ...]) -> str:
    """The official NSynth output: `<|pitch|><|midi_pitch_N|><|velocity|><|midi_velocity_N|>
    <|instrument|>family`, followed by `<|sonic|>q1, q2` when the note has qualities."""
    text = (f"<|pitch|><|midi_pitch_{note.pitch}|><|velocity|><|midi_velocity_{note.velocity}|>"
            f"<|instrument|>{note.family}")
    return text + (f"<|sonic|>{', '.join(sonic)}" if sonic else "")
