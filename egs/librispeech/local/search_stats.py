#!/usr/bin/env python3
"""Where a bit-width search ended, from the architecture logits in a compressed model's checkpoint.

Usage:
    python local/search_stats.py bench/exp/asr_mpq_joint_2.0bit bench/exp/asr_mpq_two_stage_2.0bit

For each directory (two_stage: its search/ run) it reads latest.pth and prints, weighted by
each layer's parameter count n_l over the quantized layers:

    expected bits  sum_l n_l * sum_i softmax(lambda_l)_i b_i / sum_l n_l
    realised bits  sum_l n_l * b_{argmax lambda_l} / sum_l n_l
    mean max-prob  mean over layers of max_i softmax(lambda_l)_i   (1/n: flat, 1: settled)
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

ARCH_LOGITS = "0.arch_logits"
SIZE_LOGITS = "0.size_logits"  # split logits: lambda = arch + size (absent before espnet_mpq 0.2)


def search_stats(model_file: Path) -> dict:
    state = torch.load(model_file, map_location="cpu")
    params = expected = realised = 0.0
    max_probs = []
    for key, logits in state.items():
        if not key.endswith(ARCH_LOGITS):
            continue
        prefix = key[: -len(ARCH_LOGITS)]
        logits = logits + state.get(prefix + SIZE_LOGITS, torch.zeros_like(logits))
        n, bits = state[prefix + "original"].numel(), state[prefix + "0.bits"].float()
        probs = torch.softmax(logits.float(), dim=0)
        params += n
        expected += n * float((probs * bits).sum())
        realised += n * float(bits[probs.argmax()])
        max_probs.append(float(probs.max()))
    if not max_probs:
        raise SystemExit(f"{model_file}: no architecture logits (not a joint or two_stage search)")
    return {"expected_bits": expected / params, "realised_bits": realised / params,
            "mean_max_prob": sum(max_probs) / len(max_probs), "layers": len(max_probs)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dirs", nargs="+", type=Path, help="exp/asr_mpq_<system> directories")
    for d in parser.parse_args().dirs:
        model_file = d / "search" / "latest.pth" if (d / "search").is_dir() else d / "latest.pth"
        if not model_file.is_file():
            raise SystemExit(f"{model_file} does not exist: is {d} a finished compression directory?")
        s = search_stats(model_file)
        print(f"{d.name}: expected {s['expected_bits']:.2f} realised {s['realised_bits']:.2f} "
              f"mean max-prob {s['mean_max_prob']:.2f} ({s['layers']} layers)")


if __name__ == "__main__":
    main()
