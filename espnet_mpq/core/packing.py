"""Dense bit packing of integer weight codes.

A code c of a b-bit layer is stored as the unsigned value

    u = c + q_b        (b >= 2: c in [-q_b, q_b], u in [0, 2^b - 2])
    u = (c + 1) / 2    (b = 1:  c in {-1, +1}, u in {0, 1})

in exactly b bits, codes back to back, least significant bit first; the last byte
is zero-padded. ``numel`` codes take ceil(numel * b / 8) bytes.
"""
from __future__ import annotations

import numpy as np
import torch

from espnet_mpq.core.primitives import check_bits, qmax

__all__ = ["packed_nbytes", "pack_codes", "unpack_codes"]


def packed_nbytes(numel: int, bits: int) -> int:
    return (numel * check_bits(bits) + 7) // 8


def pack_codes(codes: torch.Tensor, bits: int) -> bytes:
    """Pack integer codes (any shape, values on the b-bit grid) into ceil(numel*b/8) bytes."""
    check_bits(bits)
    c = codes.detach().cpu().reshape(-1).to(torch.int16).numpy()
    q = qmax(bits)
    if bits == 1:
        if not np.isin(c, (-1, 1)).all():
            raise ValueError("1-bit codes must be -1 or +1")
        u = ((c + 1) // 2).astype(np.uint8)
    else:
        if c.size and (c.min() < -q or c.max() > q):
            raise ValueError(f"{bits}-bit codes must lie in [-{q}, {q}], got [{c.min()}, {c.max()}]")
        u = (c + q).astype(np.uint8)
    bit_planes = (u[:, None] >> np.arange(bits, dtype=np.uint8)) & 1  # (numel, b), LSB first
    return np.packbits(bit_planes.reshape(-1), bitorder="little").tobytes()


def unpack_codes(data: bytes, bits: int, shape: tuple[int, ...]) -> torch.Tensor:
    """Inverse of ``pack_codes``: int8 codes of ``shape``. Raises ValueError on a wrong size or out-of-grid value."""
    check_bits(bits)
    numel = int(np.prod(shape)) if len(shape) else 1
    if len(data) != packed_nbytes(numel, bits):
        raise ValueError(f"expected {packed_nbytes(numel, bits)} bytes for {numel} {bits}-bit codes, got {len(data)}")
    flat = np.unpackbits(np.frombuffer(data, dtype=np.uint8), count=numel * bits, bitorder="little")
    u = (flat.reshape(numel, bits).astype(np.int16) << np.arange(bits, dtype=np.int16)).sum(axis=1)
    if bits == 1:
        c = 2 * u - 1
    else:
        q = qmax(bits)
        if u.size and u.max() > 2 * q:
            raise ValueError(f"packed data holds a value outside the {bits}-bit grid")
        c = u - q
    return torch.from_numpy(c.astype(np.int8)).reshape(shape)
