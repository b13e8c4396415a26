"""Compiles the quantizer's Triton kernels for CUDA GPUs ahead of time, without a GPU, and reports
their registers and spills (ptxas -v).

Usage:
    .venv/bin/python bench/triton_compile.py                     # sm_80 and sm_90, every candidate count
    .venv/bin/python bench/triton_compile.py --arch 90 --candidates 3 5

For each GPU architecture and candidate count n (1..8), compiles mixture_forward and
mixture_backward (espnet_mpq/core/triton_mixture.py) for every launch shape (NP, BLOCK_N) that
espnet_mpq.core.triton_kernel picks for rows of COLUMNS elements (the published models' weights:
conv extractor 10..1,536, transformer 768..4,096, positional conv 8,192), through Triton's own
compiler to PTX and with the ptxas that triton ships. Triton's interpreter (the tests' way of
running the kernels on the CPU) does not compile them, so it cannot see what only the compiler
rejects. Exits with status 1 if a kernel does not compile; spills are listed (a few bytes in a
backward kernel cost one local-memory store per chunk, not worth a failure).
Needs triton with its NVIDIA backend (the PyPI wheel) and TRITON_INTERPRET unset.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

COLUMNS = (10, 768, 1024, 1536, 3072, 4096, 8192)
SIGNATURES = {
    "mixture_forward": ["w_ptr", "scale_ptr", "g_ptr", "table_ptr", "out_ptr"],
    "mixture_backward": ["grad_ptr", "w_ptr", "scale_ptr", "g_ptr", "table_ptr", "grad_w_ptr", "grad_scale_ptr",
                         "partial_g_ptr"],
}


def ptxas_report(ptxas: Path, ptx: str) -> tuple[int, int]:
    """(registers, spill store bytes) of one kernel's PTX, for the target it names (e.g. sm_90a)."""
    target = next(line.split()[1] for line in ptx.splitlines() if line.startswith(".target"))
    with tempfile.NamedTemporaryFile("w", suffix=".ptx") as f:
        f.write(ptx)
        f.flush()
        out = subprocess.run([str(ptxas), "-v", f"--gpu-name={target}", f.name, "-o", os.devnull],
                             capture_output=True, text=True, check=True).stderr
    registers = int(out.split("Used ")[1].split(" registers")[0])
    spills = int(out.split("bytes stack frame, ")[1].split(" bytes spill stores")[0])
    return registers, spills


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", type=int, nargs="+", default=[80, 90], help="compute capabilities, e.g. 80 90")
    parser.add_argument("--candidates", type=int, nargs="+", default=list(range(1, 9)))
    args = parser.parse_args()
    if os.environ.get("TRITON_INTERPRET", "0") == "1":
        parser.error("TRITON_INTERPRET=1 is set: the interpreter compiles nothing; unset it")
    bad = [n for n in args.candidates if not 1 <= n <= 8]
    if bad:
        parser.error(f"--candidates {bad}: a candidate set has 1 to 8 bit-widths")
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from espnet_mpq.core import triton_kernel, triton_mixture
    from espnet_mpq.core.primitives import SCALE_EPS

    ptxas = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "ptxas"
    print(f"triton {triton.__version__}, ptxas {ptxas}")
    print(f"{'arch':>4} {'n':>2} {'NP':>2} {'BLOCK_N':>7} {'kernel':<17} {'registers':>9} {'spill bytes':>11}")
    failures, spilled = 0, []
    for arch in args.arch:
        for n in args.candidates:
            for padded, block in sorted({triton_kernel._launch_shape(n, c) for c in COLUMNS}):
                constants = {"NUM": n, "NP": padded, "BLOCK_N": block, "EPS": SCALE_EPS}
                for name, pointers in SIGNATURES.items():
                    signature = {**{p: "*fp32" for p in pointers}, "C": "i32", "N": "i32",
                                 **{k: "constexpr" for k in constants}}
                    try:
                        kernel = triton.compile(ASTSource(getattr(triton_mixture, name), signature, constants),
                                                target=GPUTarget("cuda", arch, 32))
                        registers, spills = ptxas_report(ptxas, kernel.asm["ptx"])
                    except Exception as err:  # noqa: BLE001  (report every kernel, then fail)
                        print(f"{arch:>4} {n:>2} {padded:>2} {block:>7} {name:<17} FAILED: {err}")
                        failures += 1
                        continue
                    if spills:
                        spilled.append(f"sm_{arch} n={n} {name} BLOCK_N={block}: {spills} bytes")
                    print(f"{arch:>4} {n:>2} {padded:>2} {block:>7} {name:<17} {registers:>9} {spills:>11}")
    print(f"spills: {'; '.join(spilled) if spilled else 'none'}")
    print(f"{failures} kernel(s) failed to compile")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
