"""CTranslate2 (faster-whisper) checkpoints: read `model.bin`, map its weights to transformers' Whisper.

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
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

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


def count_layers(model: Ct2Model, side: str) -> int:
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
    for i in range(count_layers(model, "encoder")):
        src, dst = f"encoder/layer_{i}", f"{enc}.layers.{i}"
        _layer_norm(model, f"{src}/self_attention/layer_norm", f"{dst}.self_attn_layer_norm", out)
        _split_projections(model, f"{src}/self_attention/linear_0",
                           [f"{dst}.self_attn.{p}_proj" for p in "qkv"], out)
        _linear(model, f"{src}/self_attention/linear_1", f"{dst}.self_attn.out_proj", out)
        _ffn(model, src, dst, out)
    _layer_norm(model, "encoder/layer_norm", f"{enc}.layer_norm", out)

    out[f"{dec}.embed_tokens.weight"] = _weight(model, "decoder/embeddings")
    out[f"{dec}.embed_positions.weight"] = _float(model, "decoder/position_encodings/encodings")
    for i in range(count_layers(model, "decoder")):
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
