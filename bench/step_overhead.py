"""Training-step cost of weight quantization, side by side in one run.

Usage:
    .venv/bin/python bench/step_overhead.py                 # 4 layers, batch 4 x 250 frames
    .venv/bin/python bench/step_overhead.py --layers 2 --repeats 3 --device cuda

Times one training step (forward + backward + Adam) of a stack of s3prl wav2vec2
transformer layers of wav2vec2-base shape (768 dims, 3072 FFN, 12 heads) in four
modes: 32-bit, uniform fake-quant (4 bits), supernet over 3 candidates
[2, 4, 8] and over 5 candidates [1, 2, 3, 4, 8]; the quantized modes both eager
and with the quantization math fused by torch.compile (``compile: true``; the
one-off compile happens in the warm-up step and is not timed). Modes are measured round-robin so
that drift in machine load affects all alike; the figure per mode is the median.
The last line is machine-readable (supernet3 = the compiled mode unless --no_compile):

    step_time_ratio supernet3/fp32 = X.XX
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch
from torch import nn

from espnet_mpq.core.transform import prepare

BITS = {"fp32": None, "uniform4": [4], "supernet3": [2, 4, 8], "supernet5": [1, 2, 3, 4, 8]}


def build_stack(num_layers: int, candidate_bits: list[int] | None, compile: bool, seed: int) -> nn.Module:
    from s3prl.upstream.wav2vec2.wav2vec2_model import TransformerSentenceEncoderLayer

    torch.manual_seed(seed)
    stack = nn.Sequential(
        *[
            TransformerSentenceEncoderLayer(embedding_dim=768, ffn_embedding_dim=3072, num_attention_heads=12,
                                            dropout=0.0, attention_dropout=0.0, activation_dropout=0.0)
            for _ in range(num_layers)
        ]
    )
    if candidate_bits is not None:
        prepare(stack, candidate_bits=candidate_bits, compile=compile)
    return stack


class Stack(nn.Module):
    def __init__(self, layers: nn.Sequential):
        super().__init__()
        self.layers = layers

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (T, B, C)
        for layer in self.layers:
            x, _ = layer(x)
        return x


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--frames", type=int, default=250, help="frames per utterance (250 = 5 s at 20 ms)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no_compile", action="store_true",
                        help="skip the torch.compile-fused modes (the last line then uses eager supernet3)")
    args = parser.parse_args()

    device = torch.device(args.device)
    modes = {m: (bits, False) for m, bits in BITS.items()}
    if not args.no_compile:
        modes.update({f"{m}+compile": (bits, True) for m, bits in BITS.items() if bits is not None})
    models = {m: Stack(build_stack(args.layers, bits, comp, args.seed)).to(device).train()
              for m, (bits, comp) in modes.items()}
    optims = {m: torch.optim.Adam(model.parameters(), lr=1e-5) for m, model in models.items()}
    x = torch.randn(args.frames, args.batch, 768, device=device)

    def step(mode: str) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        optims[mode].zero_grad(set_to_none=True)
        models[mode](x).pow(2).mean().backward()
        optims[mode].step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    for mode in modes:  # warm-up (allocator, lazy scale initialisation)
        step(mode)
    times = {m: [] for m in modes}
    for _ in range(args.repeats):
        for mode in modes:
            times[mode].append(step(mode))
    median = {m: statistics.median(t) for m, t in times.items()}

    print(f"device={device} ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads), "
          f"torch {torch.__version__}")
    print(f"{args.layers} x wav2vec2-base layers, batch {args.batch} x {args.frames} frames, "
          f"median of {args.repeats} steps")
    print(f"{'mode':<10} {'step_s':>8} {'ratio':>6}")
    for mode in modes:
        print(f"{mode:<10} {median[mode]:8.3f} {median[mode] / median['fp32']:6.2f}")
    print("json " + json.dumps({m: round(v, 4) for m, v in median.items()}))
    best = "supernet3" if args.no_compile else "supernet3+compile"
    print(f"supernet3 below = {best}")
    print(f"step_time_ratio supernet3/fp32 = {median[best] / median['fp32']:.2f}")


if __name__ == "__main__":
    main()
