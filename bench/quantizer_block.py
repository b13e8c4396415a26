"""The fused quantizer's eager CPU loop alone: time per weight element against the block size,
and the C kernel (the CPU default; espnet_mpq.core.native) on the same weight for comparison.

Usage:
    .venv/bin/python bench/quantizer_block.py
    .venv/bin/python bench/quantizer_block.py --shape 1024 4096 --bits 1 2 3 4 8 --blocks 1048576 262144

Times the forward and the backward of espnet_mpq.core.fused's candidate loop (the
CPU fallback where the C kernel cannot be built) on one weight (default: a wav2vec2-base feed-forward weight, 3072 x 768,
candidates [2, 4, 8]) for each value of fused.LOOP_BLOCK_ELEMENTS given, in ns per
weight element (minimum of ``--repeats`` calls after a warm-up, so the weight is
warm in the cache: a lower bound of what a training step pays). The block size
with the lowest total is the one to set for a CPU; the last line is
machine-readable JSON. The C kernel takes the whole weight (no blocks); its row is left out,
with a line saying so, where it cannot be built.
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from espnet_mpq.core import fused, native


def best_seconds(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", type=int, nargs=2, default=[3072, 768], metavar=("C_OUT", "N"))
    parser.add_argument("--bits", type=int, nargs="+", default=[2, 4, 8])
    parser.add_argument("--blocks", type=int, nargs="+", default=[1 << 22, 1 << 20, 1 << 19, 1 << 18, 1 << 17, 1 << 16],
                        help="values of LOOP_BLOCK_ELEMENTS to time")
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    torch.manual_seed(0)
    bits = tuple(args.bits)
    w, grad = torch.randn(*args.shape), torch.randn(*args.shape)
    s = torch.rand(len(bits), args.shape[0]) * 0.02 + 0.01
    g = torch.softmax(torch.randn(len(bits)), 0)
    elements = w.numel()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, weight {tuple(w.shape)}, candidates {list(bits)}, "
          f"default LOOP_BLOCK_ELEMENTS {fused.LOOP_BLOCK_ELEMENTS}")
    rows = []
    default = fused.LOOP_BLOCK_ELEMENTS
    try:
        for block in args.blocks:
            fused.LOOP_BLOCK_ELEMENTS = block
            blocks = fused._row_blocks(w, len(bits), broadcast=False, whole=False)

            def forward():
                out = torch.empty_like(w)
                for r in blocks:
                    fused._forward_loop(w[r], s[:, r], g, bits, out=out[r])

            def backward():
                out = torch.empty_like(w)
                for r in blocks:
                    fused._backward_loop(grad[r], w[r], s[:, r], g, bits, out=out[r])

            f, b = best_seconds(forward, args.repeats), best_seconds(backward, args.repeats)
            row = {"block_elements": block, "blocks": len(blocks), "forward_ns_per_element": round(f / elements * 1e9, 3),
                   "backward_ns_per_element": round(b / elements * 1e9, 3)}
            rows.append(row)
            print(f"block {block:>8} elements ({len(blocks):>3} blocks): forward {row['forward_ns_per_element']:.2f} "
                  f"ns/element, backward {row['backward_ns_per_element']:.2f} ns/element", flush=True)
    finally:
        fused.LOOP_BLOCK_ELEMENTS = default
    if native.kernels() is None:
        print("C kernel: not available (no C compiler, a failed build, or ESPNET_MPQ_NATIVE=0)")
    else:
        f = best_seconds(lambda: native.forward(w, s, g, bits), args.repeats)
        b = best_seconds(lambda: native.backward(grad, w, s, g, bits), args.repeats)
        row = {"block_elements": "c_kernel", "blocks": 1, "forward_ns_per_element": round(f / elements * 1e9, 3),
               "backward_ns_per_element": round(b / elements * 1e9, 3)}
        rows.append(row)
        print(f"C kernel (whole weight):            forward {row['forward_ns_per_element']:.2f} "
              f"ns/element, backward {row['backward_ns_per_element']:.2f} ns/element", flush=True)
    print("json " + json.dumps(rows))


if __name__ == "__main__":
    main()
