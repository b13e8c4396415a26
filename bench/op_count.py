"""Operators a training step dispatches, per quantized weight: the host-side cost of the quantizer.

Usage:
    .venv/bin/python bench/op_count.py            # 1 wav2vec2-base layer, the modes of step_overhead.py

Runs one training step (forward + backward, after a warm-up step) of the same
wav2vec2-base transformer layer(s) as bench/step_overhead.py, in each of its eager
modes and with each strategy of the quantizer (``loop`` over candidates, the CPU's
default; ``broadcast``, all candidates of a layer at once, the default on accelerators;
``grouped``, the layers of the step in a few grouped calls, ``grouped: true``), under
torch.profiler on the CPU, and counts the ATen operators called from outside
another ATen operator (``top-level``: each is one trip through the dispatcher from
Python or autograd; on a GPU, one kernel launch or a view) and all ATen operators.
The extra top-level operators over 32-bit, divided by the number of quantized
weights, is what the quantizer adds per weight and step (for ``grouped``, a fixed number
per step and candidate set plus a few per weight: it falls with more layers). The count does not depend
on the device or the sizes (the dead-candidate skip, which reads g on the host, is
off here, as it is on a GPU). Where a GPU step is bound by this host-side work
rather than by the kernels, its time grows with these counts.
The last line is machine-readable JSON.
"""
from __future__ import annotations

import argparse
import functools
import json

import torch
from torch.profiler import ProfilerActivity, profile

import espnet_mpq.core.supernet as supernet_module
from espnet_mpq.core.fused import fused_mix_fake_quantize
from espnet_mpq.core.transform import quantized_layers
from step_overhead import BITS, STRATEGIES, build_stack

FRAMES, BATCH = 50, 1


def count_step(model: torch.nn.Module) -> tuple[int, int]:
    """(top-level ATen operators, all ATen operators) of one forward + backward."""
    x = torch.randn(FRAMES, BATCH, 768)
    model(x).pow(2).mean().backward()  # warm-up: scale initialisation, lazy state
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        model(x).pow(2).mean().backward()
    aten = [e for e in prof.events() if e.name.startswith("aten::")]
    top = [e for e in aten if e.cpu_parent is None or not e.cpu_parent.name.startswith("aten::")]
    return len(top), len(aten)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(1)
    counts = {}
    for strategy, (broadcast, grouped) in STRATEGIES.items():
        # Every candidate computed, as on a GPU; the strategy forced.
        supernet_module.fused_mix_fake_quantize = functools.partial(fused_mix_fake_quantize, dead_threshold=0.0,
                                                                    broadcast=broadcast)
        for mode, bits in BITS.items():
            if bits is None and strategy != "loop":
                continue
            name = mode if bits is None else f"{mode}/{strategy}"
            model = build_stack(args.layers, bits, compile=False, seed=0, grouped=grouped).train()
            top, total = count_step(model)
            counts[name] = {"quantized_weights": len(list(quantized_layers(model))), "top_level_ops": top,
                            "all_ops": total}
    base = counts["fp32"]["top_level_ops"]
    print(f"{args.layers} x wav2vec2-base layer, one training step (forward + backward), torch {torch.__version__}")
    print(f"{'mode':<22} {'weights':>7} {'top-level ops':>13} {'all ops':>8} {'extra top-level ops / weight':>29}")
    for name, c in counts.items():
        per_weight = (c["top_level_ops"] - base) / c["quantized_weights"] if c["quantized_weights"] else 0.0
        c["extra_top_level_ops_per_weight"] = round(per_weight, 1)
        print(f"{name:<22} {c['quantized_weights']:>7} {c['top_level_ops']:>13} {c['all_ops']:>8} {per_weight:>29.1f}")
    print("json " + json.dumps(counts))


if __name__ == "__main__":
    main()
