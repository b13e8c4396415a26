"""Triton kernels of the mixture quantizer for CUDA GPUs: one launch forward, one backward.

Loaded by espnet_mpq.core.triton_kernel (which holds the contract and the host-side calls); this
module imports triton. Symbols as in espnet_mpq.core.fused, for one output channel (row) c of
W (C, N), candidates i = 0..n-1 (padded to NP, a power of two, with g = 0), and the raw learned
scale r_ic:

    s_ic     = max(|r_ic|, SCALE_EPS)                     (primitives.positive_scale)
    x_icj    = W_cj / s_ic                                (IEEE division, as torch's)
    L_icj    = round_half_even(clamp(x_icj, -q_i, q_i))   (sign, +1 at 0, for 1-bit candidates)
    m_icj    = 1[x_icj == clamp(x_icj, -q_i, q_i)]
    out_cj   = sum_i g_i s_ic L_icj
  backward, for dOut = d:
    dW_cj    = d_cj sum_i g_i m_icj
    A_ic     = sum_j d_cj L_icj,   B_ic = sum_j d_cj m_icj x_icj
    dr_ic    = g_i (A_ic - B_ic) / sqrt(N q_i) * (sign(r_ic) if |r_ic| >= SCALE_EPS else 0)
    P_ic     = A_ic s_ic          (dL/dg_i = sum_c P_ic, summed by the caller)

One program per output channel walks the row in chunks of BLOCK_N columns, all candidates at
once as an (NP, BLOCK_N) tile, so W and dOut are read once per call (twice in all) and nothing
per candidate reaches memory.
"""
import triton
import triton.language as tl


@triton.jit
def _round_half_even(x):
    """torch.round's rounding (half to even), exact for |x| < 2^22 (x is clamped to |x| <= 127)."""
    f = tl.floor(x)
    frac = x - f
    odd = (f - 2.0 * tl.floor(f * 0.5)) == 1.0
    return tl.where((frac > 0.5) | ((frac == 0.5) & odd), f + 1.0, f)


@triton.jit
def _levels(x, q, sign):
    """(clamp(x, -q, q), L) for x (NP, BLOCK_N), q and sign (NP, 1)."""
    clamped = tl.minimum(tl.maximum(x, -q), q)
    levels = tl.where(sign, tl.where(clamped >= 0.0, 1.0, -1.0), _round_half_even(clamped))
    return clamped, levels


@triton.jit
def _candidates(scale_ptr, table_ptr, C, row, NUM: tl.constexpr, NP: tl.constexpr, EPS: tl.constexpr):
    """Per candidate of this row, as (NP,) vectors: raw scale r, positive scale s, q, 1-bit flag, validity.
    ``table`` is (2, NUM) float32: q_i, then 1.0 for 1-bit candidates."""
    cand = tl.arange(0, NP)
    valid = cand < NUM
    raw = tl.load(scale_ptr + cand * C + row, mask=valid, other=1.0)
    s = tl.maximum(tl.abs(raw), EPS)
    q = tl.load(table_ptr + cand, mask=valid, other=1.0)
    sign = tl.load(table_ptr + NUM + cand, mask=valid, other=0.0) != 0.0
    return raw, s, q, sign, valid


@triton.jit
def mixture_forward(w_ptr, scale_ptr, g_ptr, table_ptr, out_ptr, C, N,
                    NUM: tl.constexpr, NP: tl.constexpr, BLOCK_N: tl.constexpr, EPS: tl.constexpr):
    row = tl.program_id(0)
    _, s, q, sign, valid = _candidates(scale_ptr, table_ptr, C, row, NUM, NP, EPS)
    g = tl.load(g_ptr + tl.arange(0, NP), mask=valid, other=0.0)
    coef = (s * g)[:, None]
    s2, q2, sign2 = s[:, None], q[:, None], sign[:, None]
    base = row.to(tl.int64) * N
    for start in range(0, N, BLOCK_N):
        cols = start + tl.arange(0, BLOCK_N)
        inside_row = cols < N
        w = tl.load(w_ptr + base + cols, mask=inside_row, other=0.0)
        levels = _levels(tl.math.div_rn(w[None, :], s2), q2, sign2)[1]  # (no name bound in the loop twice)
        tl.store(out_ptr + base + cols, tl.sum(levels * coef, axis=0), mask=inside_row)


@triton.jit
def mixture_backward(grad_ptr, w_ptr, scale_ptr, g_ptr, table_ptr, grad_w_ptr, grad_scale_ptr, partial_g_ptr,
                     C, N, NUM: tl.constexpr, NP: tl.constexpr, BLOCK_N: tl.constexpr, EPS: tl.constexpr):
    row = tl.program_id(0)
    raw, s, q, sign, valid = _candidates(scale_ptr, table_ptr, C, row, NUM, NP, EPS)
    g = tl.load(g_ptr + tl.arange(0, NP), mask=valid, other=0.0)
    g2, s2, q2, sign2 = g[:, None], s[:, None], q[:, None], sign[:, None]
    levels_dot = tl.zeros((NP,), dtype=tl.float32)  # A, summed chunk by chunk (no tile-sized accumulators)
    clip_dot = tl.zeros((NP,), dtype=tl.float32)  # B
    base = row.to(tl.int64) * N
    for start in range(0, N, BLOCK_N):
        cols = start + tl.arange(0, BLOCK_N)
        inside_row = cols < N
        w = tl.load(w_ptr + base + cols, mask=inside_row, other=0.0)
        d = tl.load(grad_ptr + base + cols, mask=inside_row, other=0.0)
        x = tl.math.div_rn(w[None, :], s2)
        clamped, levels = _levels(x, q2, sign2)
        inside = x == clamped
        d2 = d[None, :]
        levels_dot += tl.sum(d2 * levels, axis=1)
        clip_dot += tl.sum(tl.where(inside, d2 * x, 0.0), axis=1)
        tl.store(grad_w_ptr + base + cols, d * tl.sum(tl.where(inside, g2, 0.0), axis=0), mask=inside_row)
    chain = tl.where(tl.abs(raw) >= EPS, tl.where(raw > 0.0, 1.0, tl.where(raw < 0.0, -1.0, 0.0)), 0.0)
    grad_scale = g * (levels_dot - clip_dot) / tl.sqrt(q * N) * chain
    cand = tl.arange(0, NP)
    tl.store(grad_scale_ptr + cand * C + row, grad_scale, mask=valid)
    tl.store(partial_g_ptr + cand * C + row, levels_dot * s, mask=valid)
