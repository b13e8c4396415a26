"""The packed low-bit model file: real b-bit weight codes, float32 scales, everything else as is.

Layout (little-endian), format version 2:

    8 bytes   magic b"MPQPACK\\0"
    4 bytes   format version (uint32), FORMAT_VERSION
    8 bytes   header length H (uint64)
    4 bytes   CRC-32 of the H header bytes (uint32)
    H bytes   JSON header: {"metadata": {...}, "payload_nbytes": N, "payload_crc32": c,
                            "quantized": [{"name", "shape", "bits", "offset", "nbytes", "scale_offset"}],
                            "float": [{"name", "shape", "dtype", "offset", "nbytes"}]}
    N bytes   payload: packed codes (see packing.py), scales and float tensors at their offsets

Both the header and the payload carry a CRC-32, so any changed byte (an offset in
the header as much as a weight in the payload) is refused rather than decoded into
other weights. Version 1 (no header checksum) and any other version are refused with
the advice to re-export. Every problem is a PackedFileError naming the file.

A quantized entry is a layer (module name); its float weight is s * codes. A float
entry is a state-dict key of the model with quantizer internals removed (the
latent weights, scales, logits and mode buffers are training-only).
"""
from __future__ import annotations

import json
import os
import struct
import tempfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from espnet_mpq.core.packing import pack_codes, unpack_codes
from espnet_mpq.core.primitives import dequantize, quantize_to_codes
from espnet_mpq.core.transform import QUANTIZABLE_TYPES, supernet_of, quantized_layers

MAGIC = b"MPQPACK\0"
FORMAT_VERSION = 2
_PREFIX = struct.Struct("<8sIQI")  # magic, version, header length, header CRC-32
# The first bytes of what torch.save writes: a zip archive (torch >= 1.6) or a legacy pickle.
TORCH_SIGNATURES = (b"PK\x03\x04", b"\x80")
# Owner read/write, group and others read, as open() gives other outputs under the usual umask 022.
FILE_MODE = 0o644

__all__ = ["PackedFileError", "PackedModel", "save_packed", "read_packed", "load_packed", "is_packed_file"]


class PackedFileError(ValueError):
    """A packed file that cannot be read or does not fit the model."""


@dataclass
class PackedLayer:
    codes: torch.Tensor  # int8, the layer's weight shape
    scale: torch.Tensor  # float32 (C_out,)
    bits: int

    def dequantize(self) -> torch.Tensor:
        return dequantize(self.codes, self.scale)


@dataclass
class PackedModel:
    metadata: dict
    layers: dict[str, PackedLayer]
    floats: dict[str, torch.Tensor]


def _is_quantizer_key(key: str, layer_names: set[str]) -> bool:
    """True for state-dict keys that belong to a layer's parametrization (latent weight, supernet state)."""
    head, sep, _ = key.partition(".parametrizations.weight.")
    return bool(sep) and head in layer_names


def _float_state(model: nn.Module) -> dict[str, torch.Tensor]:
    names = {n for n, _ in quantized_layers(model)}
    return {k: v for k, v in model.state_dict().items() if not _is_quantizer_key(k, names)}


def save_packed(model: nn.Module, path: str | os.PathLike, metadata: dict | None = None) -> int:
    """Write ``model``'s packed file atomically; return its size in bytes.

    Scales not yet initialised (no forward since ``prepare``) are initialised first, as
    the layer's first forward would, so the file always holds what the model computes.
    """
    modules = dict(model.named_modules())
    chunks: list[bytes] = []
    offset = 0

    def add(data: bytes) -> tuple[int, int]:
        nonlocal offset
        start = offset
        chunks.append(data)
        offset += len(data)
        return start, len(data)

    quantized = []
    for name, supernet in quantized_layers(model):
        latent = modules[name].parametrizations.weight.original.detach()
        if not bool(supernet.scales_initialized):  # the scales the layer's first forward would set
            supernet.initialize_scales(latent)
        k = supernet.chosen_index
        bits, scale = supernet.candidate_bits[k], supernet.scales[k].detach().float().cpu()
        codes = quantize_to_codes(latent.cpu(), scale, bits)
        code_off, code_n = add(pack_codes(codes, bits))
        scale_off, _ = add(scale.numpy().astype("<f4").tobytes())
        quantized.append(
            {"name": name, "shape": list(latent.shape), "bits": bits, "offset": code_off, "nbytes": code_n,
             "scale_offset": scale_off}
        )
    floats = []
    for key, tensor in _float_state(model).items():
        t = tensor.detach().cpu().contiguous()
        off, n = add(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.view(torch.int16).numpy().tobytes())
        floats.append({"name": key, "shape": list(t.shape), "dtype": str(t.dtype).replace("torch.", ""),
                       "offset": off, "nbytes": n})
    payload = b"".join(chunks)
    header = json.dumps(
        {"metadata": metadata or {}, "payload_nbytes": len(payload), "payload_crc32": zlib.crc32(payload),
         "quantized": quantized, "float": floats},
        separators=(",", ":"),
    ).encode()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(_PREFIX.pack(MAGIC, FORMAT_VERSION, len(header), zlib.crc32(header)))
            f.write(header)
            f.write(payload)
        os.chmod(tmp, FILE_MODE & ~_umask())  # mkstemp creates 0600
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):  # interrupted or failed before the rename: leave no hidden file
            os.unlink(tmp)
    return path.stat().st_size


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def is_packed_file(path: str | os.PathLike) -> bool:
    """True for a packed file (its magic), False for a torch checkpoint (zip or pickle).

    Anything else (an empty or tiny file, a damaged magic) is neither, and loading it
    either way could only fail deep inside a reader: PackedFileError naming the file.
    A missing file (or a directory) is FileNotFoundError.
    """
    if not Path(path).is_file():
        raise FileNotFoundError(f"model file {path} does not exist or is not a file")
    with open(path, "rb") as f:
        head = f.read(len(MAGIC))
    if head == MAGIC:
        return True
    if head.startswith(TORCH_SIGNATURES[0]):
        _check_zip_checkpoint(path)
        return False
    if head.startswith(TORCH_SIGNATURES[1]) and len(head) == len(MAGIC):
        return False
    raise PackedFileError(
        f"{path} is neither an espnet_mpq packed model file nor a torch checkpoint "
        f"({_describe_start(head)}): re-export it with espnet_mpq.bin.export or give the training's .pth"
    )


def _check_zip_checkpoint(path: str | os.PathLike) -> None:
    """A torch zip checkpoint must be a whole archive whose members match their CRC-32s.

    torch.load checks neither: a truncated file dies in its C++ reader without naming
    the file, and a changed byte in a tensor loads as a wrong weight.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, EOFError, OSError, NotImplementedError) as e:
        raise PackedFileError(f"{path} is a damaged torch checkpoint (truncated or not a whole archive: {e})") from None
    if bad is not None:
        raise PackedFileError(f"{path} is a corrupt torch checkpoint: member {bad} fails its checksum")


def _describe_start(head: bytes) -> str:
    if not head:
        return "the file is empty"
    if len(head) < len(MAGIC):
        return f"only {len(head)} bytes"
    return f"it starts with {head!r}"


def read_packed(path: str | os.PathLike) -> PackedModel:
    """Read and verify a packed file. Raises PackedFileError naming the file and what is wrong."""
    path = Path(path)
    data = path.read_bytes()
    if len(data) < len(MAGIC) or data[: len(MAGIC)] != MAGIC:
        raise PackedFileError(
            f"{path} is not an espnet_mpq packed model file (no {MAGIC!r} magic: {_describe_start(data[:8])})"
        )
    if len(data) >= 12:
        (version,) = struct.unpack_from("<I", data, len(MAGIC))
        if version != FORMAT_VERSION:
            raise PackedFileError(
                f"{path} has packed format version {version}; this espnet_mpq reads version {FORMAT_VERSION} "
                "only: re-export the model with espnet_mpq.bin.export"
            )
    if len(data) < _PREFIX.size:
        raise PackedFileError(f"{path} is truncated: {len(data)} bytes, shorter than the {_PREFIX.size}-byte prefix")
    _, _, header_len, header_crc = _PREFIX.unpack_from(data)
    start = _PREFIX.size + header_len
    if start > len(data):
        raise PackedFileError(f"{path} is truncated or its header length is corrupt: header of {header_len} bytes "
                              f"in a file of {len(data)}")
    header_bytes = data[_PREFIX.size:start]
    if zlib.crc32(header_bytes) != header_crc:
        raise PackedFileError(f"{path} is corrupt: header checksum mismatch")
    try:
        header = json.loads(header_bytes)
        payload_nbytes, payload_crc = header["payload_nbytes"], header["payload_crc32"]
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as e:
        raise PackedFileError(f"{path}: header is not a packed-file header ({e!r})") from None
    payload = data[start:]
    if len(payload) != payload_nbytes:
        raise PackedFileError(
            f"{path} is truncated or padded: payload has {len(payload)} bytes, header says {payload_nbytes}"
        )
    if zlib.crc32(payload) != payload_crc:
        raise PackedFileError(f"{path} is corrupt: payload checksum mismatch")
    try:
        return _decode(header, payload)
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as e:
        raise PackedFileError(f"{path}: header entries do not describe the payload ({e!r})") from None


def _decode(header: dict, payload: bytes) -> PackedModel:
    layers = {}
    for e in header["quantized"]:
        codes = unpack_codes(payload[e["offset"]:e["offset"] + e["nbytes"]], e["bits"], tuple(e["shape"]))
        c_out = e["shape"][0]
        scale = np.frombuffer(payload, dtype="<f4", count=c_out, offset=e["scale_offset"]).copy()
        layers[e["name"]] = PackedLayer(codes, torch.from_numpy(scale), e["bits"])
    floats = {}
    for e in header["float"]:
        dtype = getattr(torch, e["dtype"])
        raw = bytearray(payload[e["offset"]:e["offset"] + e["nbytes"]])
        floats[e["name"]] = torch.frombuffer(raw, dtype=dtype).reshape(e["shape"]) if raw else torch.empty(
            e["shape"], dtype=dtype)
    return PackedModel(header["metadata"], layers, floats)


def _check_names(kind: str, in_file: set[str], in_model: set[str]) -> None:
    missing, extra = sorted(in_model - in_file), sorted(in_file - in_model)
    if missing or extra:
        def show(names):
            return f"{names[:5]}" + (f" (+{len(names) - 5} more)" if len(names) > 5 else "")
        raise PackedFileError(
            f"packed file's {kind} do not match the model: "
            + (f"missing from the file: {show(missing)}; " if missing else "")
            + (f"not in the model: {show(extra)}" if extra else "")
        )


@torch.no_grad()
def load_packed(model: nn.Module, path: str | os.PathLike) -> PackedModel:
    """Load a packed file into ``model`` in place and return what was read.

    A layer that is quantized in ``model`` (built from the same config) gets its
    latent weight = s * codes, its scale, and its bit-width fixed, so its forward
    equals the exported fake-quantized layer's. A plain nn.Linear / nn.Conv1d gets
    weight = s * codes (a float model).
    """
    packed = read_packed(path)
    modules = dict(model.named_modules())
    quantized_names = {n for n, _ in quantized_layers(model)}
    model_layers = {n for n, m in modules.items() if isinstance(m, QUANTIZABLE_TYPES)}
    unknown = sorted(set(packed.layers) - model_layers)
    if unknown:
        raise PackedFileError(f"packed file's layers are not Linear/Conv1d layers of the model: {unknown[:5]}")
    missing = sorted(quantized_names - set(packed.layers))
    if missing:
        raise PackedFileError(f"the model's quantized layers are missing from the packed file: {missing[:5]}")
    expected_float = set(_float_state(model)) - {f"{n}.weight" for n in packed.layers}
    _check_names("float tensors", set(packed.floats), expected_float)
    model_state = model.state_dict()
    targets = {}
    for name, layer in packed.layers.items():  # validate everything before changing the model
        supernet = supernet_of(modules[name])
        target = modules[name].parametrizations.weight.original if supernet is not None else modules[name].weight
        if tuple(target.shape) != tuple(layer.codes.shape):
            raise PackedFileError(
                f"layer {name!r}: packed shape {tuple(layer.codes.shape)} != model shape {tuple(target.shape)}"
            )
        if supernet is not None and layer.bits not in supernet.candidate_bits:
            raise PackedFileError(
                f"layer {name!r}: packed bit-width {layer.bits} is not among its candidates "
                f"{list(supernet.candidate_bits)}"
            )
        targets[name] = (target, supernet)
    for key, value in packed.floats.items():
        if tuple(model_state[key].shape) != tuple(value.shape):
            raise PackedFileError(
                f"tensor {key!r}: packed shape {tuple(value.shape)} != model shape {tuple(model_state[key].shape)}"
            )
    for name, layer in packed.layers.items():
        target, supernet = targets[name]
        target.copy_(layer.dequantize())
        if supernet is not None:
            k = supernet.candidate_bits.index(layer.bits)
            supernet.scales[k].copy_(layer.scale)
            supernet.scales_initialized.fill_(True)
            supernet.fix(k)
    for key, value in packed.floats.items():
        model_state[key].copy_(value)
    return packed
