#!/usr/bin/env python3
"""Results table of the recipe: the 32-bit model and every compressed system, per test set.

Usage:
    python local/make_report.py --fp32_dir exp/asr_fp32 --test_sets dev_synth test_synth \\
        --systems exp/asr_mpq_joint_3.5bit exp/asr_mpq_uniform_4bit --output exp/results.md

Reads, for each system directory (run.sh's stages 10-13 write them):
    size.json                  espnet_mpq.bin.export's report (bits, ratios, packed size)
    decode_<set>/score.json    espnet_mpq.bin.score's output (WER, MAPSSWE against fp32)
    compression_time.json      {"seconds", "device", "quantizer"} of stage 10
    decode_<set>/decoding.txt  run.sh: the LM the set was decoded with (refused when they differ)
and the 32-bit model's size.json and decode_<set>/score.json in --fp32_dir. Writes
(atomically) --output, a Markdown table with one row per system and test set:

    | system | test set | WER % | p (MAPSSWE) | lossless | avg bits | ratio upstream |
    | ratio model | packed MB | compression time |

A system that has no hypothesis for some utterances (scored as all deletions, and
never lossless) shows "no (N missing)" in the lossless column. Writes also, for
each compressed system, <system dir>/bits_per_layer.png (bits of every
quantized layer, in model order).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path

from decoding_note import DecodingNoteError, same_lm  # local/

FP32 = "fp32"
HEADER = ("system", "test set", "WER %", "p (MAPSSWE)", "lossless", "avg bits", "ratio upstream",
          "ratio model", "packed MB", "compression time")
TAG_PREFIX = "asr_mpq_"


def read_json(path: Path) -> dict:
    if not path.is_file():
        raise SystemExit(f"make_report: {path} is missing: run the stage that writes it")
    return json.loads(path.read_text(encoding="utf-8"))


def system_rows(name: str, sys_dir: Path, score_dir: Path, test_sets: list[str], seconds: str) -> list[tuple]:
    """Table rows of one system; its WER and p-value come from score_dir/decode_<set>/score.json."""
    size = read_json(sys_dir / "size.json")
    rows = []
    for dset in test_sets:
        score = read_json(score_dir / f"decode_{dset}" / "score.json")["systems"][name]
        test = score["mapsswe"]
        rows.append((
            name, dset, f"{score['wer']:.2f}",
            "-" if test is None else test["p_value_text"],
            lossless_cell(score),
            f"{size['model']['average_bits']:.2f}" if size["model"]["quantized_params"] else "32",
            f"{size['upstream']['compression_ratio']:.2f}", f"{size['model']['compression_ratio']:.2f}",
            f"{size['packed_mb']:.3f}", seconds,
        ))
    return rows


def lossless_cell(score: dict) -> str:
    """yes / no / - (the baseline); "no (N missing)" when the system has no hypothesis for N utterances."""
    if score["lossless"] is None:
        return "-"
    missing = len(score.get("missing_utterances", []))
    return "yes" if score["lossless"] else ("no" if not missing else f"no ({missing} missing)")


def plot_bits(bits: dict[str, int], title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n.replace("frontend.upstream.upstream.model.", "upstream.") for n in bits]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.25 * len(bits)), 4.0))
    ax.bar(range(len(bits)), list(bits.values()))
    ax.set_xticks(range(len(bits)), names, rotation=90, fontsize=6)
    ax.set_ylabel("bits")
    ax.set_title(title)
    fig.tight_layout()
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fp32_dir", type=Path, required=True)
    parser.add_argument("--systems", type=Path, nargs="*", default=[], help="compressed systems' directories")
    parser.add_argument("--test_sets", nargs="+", required=True)
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    rows = []
    for sys_dir in args.systems:
        name = sys_dir.name.removeprefix(TAG_PREFIX)
        if not rows:  # the 32-bit rows, scored in the first system's run (same references)
            rows += system_rows(FP32, args.fp32_dir, sys_dir, args.test_sets, "-")
        timing = read_json(sys_dir / "compression_time.json")
        rows += system_rows(name, sys_dir, sys_dir, args.test_sets, f"{timing['seconds']} s ({timing['device']})")
        bits = read_json(sys_dir / "size.json")["bits_per_layer"]
        if bits:
            plot_bits(bits, f"{name}: bits per layer", sys_dir / "bits_per_layer.png")
    if not rows:
        rows = system_rows(FP32, args.fp32_dir, args.fp32_dir, args.test_sets, "-")

    try:
        lm = same_lm([d / f"decode_{dset}" for d in [args.fp32_dir, *args.systems] for dset in args.test_sets])
    except DecodingNoteError as error:
        raise SystemExit(f"make_report: {error}") from None
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    text = "\n".join(lines) + "\n\nWER on each test set; p: MAPSSWE against fp32; lossless: not significantly " \
        "worse than fp32 at alpha = 0.05; ratios: 32-bit size over stored size. Decoding: " + \
        (f"CTC prefix beam search with the LM {lm}.\n" if lm else "without an LM.\n")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.output.with_name(f".{args.output.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, args.output)
    logging.info("wrote %s (%d rows)", args.output, len(rows))


if __name__ == "__main__":
    main()
