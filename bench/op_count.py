"""Operators a training step dispatches, per quantized weight: the host-side cost of the quantizer.

Usage:
    .venv/bin/python bench/op_count.py            # 1 wav2vec2-base layer, the modes of step_overhead.py
    .venv/bin/python bench/op_count.py --layers 12 --search_extras   # + the model-level work of a search step

Runs one training step (forward + backward, after a warm-up step) of the same
wav2vec2-base transformer layer(s) as bench/step_overhead.py, in each of its eager
modes and with each strategy of the quantizer (``loop`` over candidates, the CPU's
default; ``broadcast``, all candidates of a layer at once, the default on accelerators;
``grouped``, the layers of the step in a few grouped calls, ``grouped: true``; ``triton``,
the broadcast's Triton kernel, ESPNET_MPQ_TRITON=1, and ``grouped_triton``, ``grouped: true``
with that kernel, whose launches are counted by a stand-in that computes nothing, one operator
each), under
torch.profiler on the CPU, and counts the ATen operators called from outside
another ATen operator (``top-level``: each is one trip through the dispatcher from
Python or autograd; on a GPU, one kernel launch or a view) and all ATen operators.
The extra top-level operators over 32-bit, divided by the number of quantized
weights, is what the quantizer adds per weight and step (for ``grouped``, a fixed number
per step and candidate set plus a few per weight: it falls with more layers). The count does not depend
on the device or the sizes (the dead-candidate skip, which reads g on the host, is
off here, as it is on a GPU). Where a GPU step is bound by this host-side work
rather than by the kernels, its time grows with these counts.

A search step does more than the forward and backward: ``--search_extras`` also counts the
model-level work of espnet_mpq.asr.model's training step while the joint quantizer
searches (split logits, the recipe's default), per part: the temperature
(``set_temperature``), the size penalty's argument, forward and backward
(``expected_average_bits``), the reported search figures (``search_summary``, without the
projection it refreshes every PROJECTION_INTERVAL steps), and Adam's step over the
architecture logits in the model's optimizer groups (``foreach``, as torch picks on a GPU).
The package's own functions do this work, so the same script counts an older checkout
(PYTHONPATH=<its root>).
The last line is machine-readable JSON.
"""
from __future__ import annotations

import argparse
import functools
import json

import torch
from torch.profiler import ProfilerActivity, profile

import espnet_mpq.core.supernet as supernet_module
from espnet_mpq.core import triton_kernel
from espnet_mpq.core.fused import fused_mix_fake_quantize
from espnet_mpq.core.budget import search_summary
from espnet_mpq.core.transform import expected_average_bits, quantized_layers, set_temperature
from step_overhead import BITS, STRATEGIES, build_stack

FRAMES, BATCH = 50, 1


class LaunchCounter:
    """Stands in for the Triton kernels (espnet_mpq.core.triton_kernel) on the CPU: each launch is
    counted as one top-level operator and computes nothing (the operator count does not depend on
    the values)."""

    def __init__(self):
        self.count = 0
        self._saved = (triton_kernel.usable, triton_kernel.kernels)

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            if torch.autograd.profiler._is_profiler_enabled:  # counted in the profiled step only
                self.count += 1
        return launch

    @property
    def mixture_forward(self):
        return self

    mixture_backward = mixture_forward

    def install(self, on: bool) -> None:
        """Route fused_mix_fake_quantize's broadcast to the counted stand-in (on) or restore the real kernel."""
        if on:
            triton_kernel.usable, triton_kernel.kernels = (lambda bits, *tensors: True), (lambda: self)
        else:
            triton_kernel.usable, triton_kernel.kernels = self._saved


def count_step(model: torch.nn.Module) -> tuple[int, int]:
    """(top-level ATen operators, all ATen operators) of one forward + backward."""
    x = torch.randn(FRAMES, BATCH, 768)
    model(x).pow(2).mean().backward()  # warm-up: scale initialisation, lazy state
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        model(x).pow(2).mean().backward()
    aten = [e for e in prof.events() if e.name.startswith("aten::")]
    top = [e for e in aten if e.cpu_parent is None or not e.cpu_parent.name.startswith("aten::")]
    return len(top), len(aten)


def count_top_level(fn) -> int:
    """Top-level ATen operators of one call of ``fn`` (after a warm-up call)."""
    fn()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    aten = [e for e in prof.events() if e.name.startswith("aten::")]
    return sum(1 for e in aten if e.cpu_parent is None or not e.cpu_parent.name.startswith("aten::"))


def count_search_extras(layers: int, bits: list[int]) -> dict[str, int]:
    """Top-level operators of each model-level part of a search step (module docstring)."""
    from espnet_mpq.asr.model import MpqESPnetModel
    from espnet_mpq.quantizers import build_config

    model = build_stack(layers, bits, compile=False, seed=0, grouped=False).train()
    model(torch.randn(FRAMES, BATCH, 768)).pow(2).mean().backward()  # scales set, every logit has a gradient
    # What optimizer_param_groups reads of the mpq model, on the stack.
    model.quantizer = build_config("joint", {"candidate_bits": bits, "target_avg_bits": 3.0, "split_logits": True})
    model._searches = True
    logit_groups = MpqESPnetModel.optimizer_param_groups(model)[1:]
    adam = torch.optim.Adam(logit_groups, foreach=True)
    return {
        "set_temperature": count_top_level(lambda: set_temperature(model, 0.5)),
        "size_penalty": count_top_level(lambda: expected_average_bits(model).backward()),
        "search_summary": count_top_level(lambda: search_summary(model, None)),
        "adam_on_logits": count_top_level(adam.step),
        "logit_groups": len(logit_groups),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=1)
    parser.add_argument("--search_extras", action="store_true",
                        help="also count the model-level work of a search step (module docstring)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    counts = {}
    launches = LaunchCounter()
    for strategy, (broadcast, grouped, triton) in STRATEGIES.items():
        # Every candidate computed, as on a GPU; the strategy forced.
        supernet_module.fused_mix_fake_quantize = functools.partial(fused_mix_fake_quantize, dead_threshold=0.0,
                                                                    broadcast=broadcast)
        launches.install(triton == "1")
        for mode, bits in BITS.items():
            if bits is None and strategy != "loop":
                continue
            name = mode if bits is None else f"{mode}/{strategy}"
            model = build_stack(args.layers, bits, compile=False, seed=0, grouped=grouped).train()
            launches.count = 0
            top, total = count_step(model)
            counts[name] = {"quantized_weights": len(list(quantized_layers(model))), "top_level_ops": top + launches.count,
                            "all_ops": total + launches.count}
    launches.install(False)
    base = counts["fp32"]["top_level_ops"]
    print(f"{args.layers} x wav2vec2-base layer, one training step (forward + backward), torch {torch.__version__}")
    print(f"{'mode':<26} {'weights':>7} {'top-level ops':>13} {'all ops':>8} {'extra top-level ops / weight':>29}")
    for name, c in counts.items():
        per_weight = (c["top_level_ops"] - base) / c["quantized_weights"] if c["quantized_weights"] else 0.0
        c["extra_top_level_ops_per_weight"] = round(per_weight, 1)
        print(f"{name:<26} {c['quantized_weights']:>7} {c['top_level_ops']:>13} {c['all_ops']:>8} {per_weight:>29.1f}")
    if args.search_extras:
        parts = ("set_temperature", "size_penalty", "search_summary", "adam_on_logits")
        print("model-level work of a search step, top-level operators (split logits; Adam foreach over the logit groups)")
        print(f"{'mode':<22} {'weights':>7} " + " ".join(f"{p:>15}" for p in parts) + f" {'groups':>6} {'total / weight':>14}")
        extras = {}
        for mode in ("supernet3", "supernet5"):
            c = extras[mode] = count_search_extras(args.layers, BITS[mode])
            weights = counts[f"{mode}/loop"]["quantized_weights"]
            total = sum(c[p] for p in parts)
            c["total_per_weight"] = round(total / weights, 1)
            print(f"{mode:<22} {weights:>7} " + " ".join(f"{c[p]:>15}" for p in parts)
                  + f" {c['logit_groups']:>6} {c['total_per_weight']:>14.1f}")
        counts["search_extras"] = extras
    print("json " + json.dumps(counts))


if __name__ == "__main__":
    main()
