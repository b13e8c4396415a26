"""Profile of one training step at wav2vec2-base size, and step times: where the quantizer's time goes.

Usage:
    .venv/bin/python bench/profile_step.py                       # supernet [2,4,8] everywhere, 1 x 2 s
    .venv/bin/python bench/profile_step.py --mode fp32
    .venv/bin/python bench/profile_step.py --block_elements 4194304 --steps 3 --no_profile

Builds the model as bench/real_shapes.py does (``--mode`` fp32 or supernet), runs one warm-up
training step (forward, backward, SGD), then ``--steps`` timed steps (wall time, minor page
faults and system CPU time of each), then one step under torch.profiler, whose operator table
(sorted by self CPU time) it prints. ``--block_elements`` sets fused.LOOP_BLOCK_ELEMENTS first.
"""
from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import real_shapes  # noqa: E402  (bench/)

from espnet_mpq.core import fused  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=["fp32", "supernet"], default="supernet")
    parser.add_argument("--seconds", type=float, default=2.0, help="one utterance of this many seconds")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--block_elements", type=int, help="fused.LOOP_BLOCK_ELEMENTS (default: the package's)")
    parser.add_argument("--no_profile", action="store_true")
    args = parser.parse_args()
    if args.block_elements:
        fused.LOOP_BLOCK_ELEMENTS = args.block_elements
    torch.manual_seed(0)
    model = real_shapes.build("wav2vec2_base", args.mode)
    audio = torch.randn(1, int(real_shapes.SAMPLE_RATE * args.seconds))
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-6)

    def step():
        opt.zero_grad(set_to_none=True)
        model(audio, mask=False, features_only=True)["x"].pow(2).mean().backward()
        opt.step()

    step()
    print(f"wav2vec2-base, {args.mode}, 1 x {args.seconds} s, LOOP_BLOCK_ELEMENTS {fused.LOOP_BLOCK_ELEMENTS}, "
          f"{torch.get_num_threads()} threads")
    for _ in range(args.steps):
        before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        step()
        seconds, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF)
        print(f"step {seconds:.3f} s, minor page faults {after.ru_minflt - before.ru_minflt}, "
              f"system CPU {after.ru_stime - before.ru_stime:.3f} s")
    if not args.no_profile:
        with torch.profiler.profile() as prof:
            step()
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=20))


if __name__ == "__main__":
    main()
