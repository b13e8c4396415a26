"""Training-step cost of weight quantization, side by side in one run.

Usage:
    .venv/bin/python bench/step_overhead.py                 # 4 layers, batch 4 x 250 frames
    .venv/bin/python bench/step_overhead.py --layers 2 --repeats 3 --device cuda --amp bf16

Times one training step (forward + backward + Adam) of a stack of s3prl wav2vec2
transformer layers of wav2vec2-base shape (768 dims, 3072 FFN, 12 heads) in these
modes: 32-bit; uniform fake-quant (4 bits); supernet over 3 candidates [2, 4, 8]
and over 5 candidates [1, 2, 3, 4, 8], all with the default quantizer (the fused
op of espnet_mpq.core.fused, eager); ``supernet3@tau0.1``, the default at the end
of the search (Gumbel-Softmax temperature 0.1, where dead candidates are skipped);
``*/unfused``, the previous per-candidate autograd graph (primitives.mix_fake_quantize,
swapped in for that mode only); the strategies other than the device's default
(default: ``loop`` on the CPU, ``broadcast`` elsewhere): ``*/loop`` and ``*/broadcast``, the
per-layer fused op over candidates in a loop or in one broadcast (espnet_mpq.core.fused),
``*/grouped``, the layers of the step in a few grouped calls (``grouped: true``,
espnet_mpq.core.grouped); on CUDA with triton installed, ``*/triton``, the broadcast's Triton kernel
(ESPNET_MPQ_TRITON=1, espnet_mpq.core.triton_kernel; uniform 4-bit too) and ``*/grouped_triton``,
``grouped: true`` with that kernel (one Gumbel draw per step for all layers, then a launch per
layer); and
``*+compile``, the fused op's kernels through
torch.compile (``compile: true``; the one-off compile happens in the warm-up step
and is not timed). Modes are measured round-robin so that drift in machine load
affects all alike; the figure per mode is the median. Also prints the fraction of
candidate evaluations that the dead-candidate rule skips over an exponential
anneal of tau from 1 to 0.1 with undecided logits (lambda = 0).
The last line is machine-readable, for the default configuration (fused, eager):

    step_time_ratio supernet3/fp32 = X.XX
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import importlib.util
import json
import os
import platform
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

import espnet_mpq.core.supernet as supernet_module
from espnet_mpq.core import triton_kernel
from espnet_mpq.core.fused import DEAD_CANDIDATE_THRESHOLD, fused_mix_fake_quantize
from espnet_mpq.core.primitives import mix_fake_quantize
from espnet_mpq.core.transform import prepare

BITS = {"fp32": None, "uniform4": [4], "supernet3": [2, 4, 8], "supernet5": [1, 2, 3, 4, 8]}
LATE_TAU = 0.1  # the end of the recipe's temperature anneal


# Strategies of the quantizer: name -> (fused op's broadcast, prepare's grouped, ESPNET_MPQ_TRITON);
# see the docstring. ``triton`` is the broadcast's Triton kernel, ``grouped_triton`` the grouped step's
# shared Gumbel draw feeding that kernel layer by layer (both CUDA only).
STRATEGIES = {"loop": (False, False, "0"), "broadcast": (True, False, "0"), "grouped": (None, True, "0"),
              "triton": (True, False, "1"), "grouped_triton": (None, True, "1")}
TRITON_STRATEGIES = ("triton", "grouped_triton")


def strategies(device: torch.device) -> dict[str, tuple]:
    """The strategies that run on ``device``: the Triton kernel needs CUDA and triton (else it is left
    out, with a note on stderr, rather than timed as the broadcast it would fall back to)."""
    available = dict(STRATEGIES)
    if device.type != "cuda" or importlib.util.find_spec("triton") is None:
        print(f"note: strategies {', '.join(TRITON_STRATEGIES)} left out (device {device}, triton "
              f"{'installed' if importlib.util.find_spec('triton') else 'not installed'})", file=sys.stderr)
        for name in TRITON_STRATEGIES:
            del available[name]
    return available


def default_strategy(device: torch.device) -> str:
    return "loop" if device.type == "cpu" else "broadcast"


class Stack(nn.Module):
    """wav2vec2-base transformer layers in a row: x (T, B, C) -> (T, B, C)."""

    def __init__(self, num_layers: int):
        from s3prl.upstream.wav2vec2.wav2vec2_model import TransformerSentenceEncoderLayer

        super().__init__()
        self.layers = nn.ModuleList(
            TransformerSentenceEncoderLayer(embedding_dim=768, ffn_embedding_dim=3072, num_attention_heads=12,
                                            dropout=0.0, attention_dropout=0.0, activation_dropout=0.0)
            for _ in range(num_layers)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x, _ = layer(x)
        return x


def build_stack(num_layers: int, candidate_bits: list[int] | None, compile: bool, seed: int,
                grouped: bool = False) -> Stack:
    """The stack, its Linear layers quantized over ``candidate_bits`` (None: 32-bit). The grouped
    step hooks the stack's own forward, so it runs only when the stack is called."""
    torch.manual_seed(seed)
    stack = Stack(num_layers)
    if candidate_bits is not None:
        prepare(stack, candidate_bits=candidate_bits, compile=compile, grouped=grouped)
    return stack


def skipped_fraction(num_candidates: int, steps: int = 2000, seed: int = 0) -> float:
    """Share of candidate evaluations with g_i < DEAD_CANDIDATE_THRESHOLD over tau = 1 -> 0.1 (lambda = 0)."""
    generator = torch.Generator().manual_seed(seed)
    taus = torch.logspace(0, -1, steps)[:, None]  # (steps, 1)
    gumbel = -torch.log(-torch.log(torch.rand(steps, num_candidates, generator=generator)))
    g = F.softmax(gumbel / taus, dim=1)  # (steps, n)
    return float((g < DEAD_CANDIDATE_THRESHOLD).float().mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--frames", type=int, default=250, help="frames per utterance (250 = 5 s at 20 ms)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--amp", choices=["none", "bf16", "fp16"], default="none",
                        help="autocast the layers (the quantizer itself always runs in float32)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no_compile", action="store_true", help="skip the torch.compile modes")
    parser.add_argument("--no_unfused", action="store_true", help="skip the previous (unfused) quantizer's modes")
    parser.add_argument("--no_other_strategy", action="store_true",
                        help="skip the modes with the fused op's non-default strategy")
    args = parser.parse_args()

    device = torch.device(args.device)
    # mode -> (candidate bits, compile, temperature, mix function swapped into the supernet, grouped,
    # ESPNET_MPQ_TRITON)
    modes = {m: (bits, False, 1.0, fused_mix_fake_quantize, False, "0") for m, bits in BITS.items()}
    modes["supernet3@tau0.1"] = (BITS["supernet3"], False, LATE_TAU, fused_mix_fake_quantize, False, "0")
    if not args.no_unfused:
        modes.update({f"{m}/unfused": (BITS[m], False, 1.0, mix_fake_quantize, False, "0")
                      for m in ("supernet3", "supernet5")})
    if not args.no_other_strategy:
        for strategy, (broadcast, grouped, triton) in strategies(device).items():
            if strategy != default_strategy(device):
                mix = functools.partial(fused_mix_fake_quantize, broadcast=broadcast)
                modes.update({f"{m}/{strategy}": (BITS[m], False, 1.0, mix, grouped, triton)
                              for m in (("uniform4",) if strategy == "triton" else ()) + ("supernet3", "supernet5")})
    if not args.no_compile:
        modes.update({f"{m}+compile": (bits, True, 1.0, fused_mix_fake_quantize, False, "0")
                      for m, bits in BITS.items() if bits is not None})
    models = {}
    for m, (bits, comp, tau, _, grouped, _) in modes.items():
        models[m] = build_stack(args.layers, bits, comp, args.seed, grouped).to(device).train()
        for module in models[m].modules():
            if isinstance(module, supernet_module.MixedPrecisionWeight):
                module.set_temperature(tau)
    optims = {m: torch.optim.Adam(model.parameters(), lr=1e-5) for m, model in models.items()}
    x = torch.randn(args.frames, args.batch, 768, device=device)
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(args.amp)

    def step(mode: str) -> float:
        supernet_module.fused_mix_fake_quantize = modes[mode][3]
        os.environ["ESPNET_MPQ_TRITON"] = modes[mode][5]
        autocast = (torch.autocast(device.type, dtype=amp_dtype) if amp_dtype is not None
                    else contextlib.nullcontext())
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        optims[mode].zero_grad(set_to_none=True)
        with autocast:
            loss = models[mode](x).float().pow(2).mean()
        loss.backward()
        optims[mode].step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    load_before = os.getloadavg()
    for mode in modes:  # warm-up (allocator, lazy scale initialisation, compile)
        launched = triton_kernel.forward_calls
        step(mode)
        if mode.split("/")[-1] in TRITON_STRATEGIES and triton_kernel.forward_calls == launched:
            sys.exit(f"mode {mode} would time the broadcast: the Triton kernel never ran (see the warnings)")
    times = {m: [] for m in modes}
    for _ in range(args.repeats):
        for mode in modes:
            times[mode].append(step(mode))
    supernet_module.fused_mix_fake_quantize = fused_mix_fake_quantize
    os.environ.pop("ESPNET_MPQ_TRITON", None)
    median = {m: statistics.median(t) for m, t in times.items()}

    print(f"device={device} ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads), "
          f"torch {torch.__version__}, autocast {args.amp}, load average {load_before[0]:.1f} before / "
          f"{os.getloadavg()[0]:.1f} after")
    print(f"{args.layers} x wav2vec2-base layers, batch {args.batch} x {args.frames} frames, "
          f"median of {args.repeats} steps")
    print(f"{'mode':<26} {'step_s':>8} {'ratio':>6}")
    for mode in modes:
        print(f"{mode:<26} {median[mode]:8.4f} {median[mode] / median['fp32']:6.2f}")
    for n in (3, 5):
        print(f"dead candidates (g_i < {DEAD_CANDIDATE_THRESHOLD:g}) skipped over tau 1 -> {LATE_TAU}, lambda = 0, "
              f"{n} candidates: {skipped_fraction(n):.3f} of candidate evaluations")
    print("json " + json.dumps({m: round(v, 4) for m, v in median.items()}))
    print(f"step_time_ratio supernet3/fp32 = {median['supernet3'] / median['fp32']:.2f}")


if __name__ == "__main__":
    main()
