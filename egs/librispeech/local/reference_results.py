#!/usr/bin/env python3
"""Figures of a recipe's 32-bit reference model: WER on test-clean/test-other, times, learning curve.

Usage:
    python local/reference_results.py collect --exp exp --upstream ssl \\
        --test_clean test_synth --test_other test_other_synth --output results/reference.json
    python local/reference_results.py table results/reference.json results/reference_random.json

``collect`` reads a run.sh work directory's exp/:

    asr_fp32/decode_<set>/score.json       espnet_mpq.bin.score (stage 9): WER, words, utterances
    asr_fp32/decode_<set>/decoding.txt     run.sh: the LM decoding used (absent: none, runs before LMs)
    lm/train_time.json                     stage 8's LM training wall clock (--use_lm true)
    asr_fp32/config.yaml                   ESPnet's config: token_type and the token list (output units)
    asr_fp32/train.log                     ESPnet's epoch results: time per epoch, valid CER
    asr_fp32/train_time.json               stage 8's wall clock (absent in runs before it was written)
    upstream/hubert_iter0/pretrain_time.json   stage 6 (absent with --upstream random)
    upstream/hubert_iter0/train.log        ESPnet's HuBERT epoch results (masked-unit accuracy)

and writes (atomically) the JSON that egs/librispeech/results/reference.json holds:

    {"upstream": "ssl" | "random",
     "test_clean": {"wer": %, "utterances": n, "words": n}, "test_other": {...},
     "units": {"token_type": "char" | "bpe" | ..., "tokens": n},
     "lm": null | {"lm_file": path, "train_s": s},
     "pretrain_s": s, "finetune_s": s, "finetune_s_from": "...", "device": "...",
     "valid_cer_per_epoch": [...], "pretrain_valid_acc_m_per_epoch": [...], "conditions": "..."}

pretrain_s is stage 6's wall clock summed over every run of it (pretrain_time.json).
finetune_s is stage 8's, from asr_fp32/train_time.json (run.sh since 2026-11-26 writes it,
every run of the stage summed); without that file it is the sum of ESPnet's per-epoch train +
valid times (each epoch logged once: start-up and the lost part of an interrupted epoch are
not in it). ``finetune_s_from`` says which.
Both test sets must have been decoded with the same LM (or both without one); ``lm`` says
which, and its training time is not in pretrain_s or finetune_s.
``table`` prints a Markdown table of several such files side by side.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path

import yaml

from decoding_note import DecodingNoteError, same_lm  # local/

EPOCH = re.compile(r"(\d+)epoch results: \[train\](.*?)\[valid\](.*?)(?:\[att_plot\]|$)", re.M)
TIME = re.compile(r"time=((?:[\d.]+ (?:hours?|minutes?|seconds?)(?:,? and |, )?)+)")
UNITS = {"hour": 3600, "minute": 60, "second": 1}


def seconds(text: str) -> float:
    """humanfriendly's '1 minute and 2.5 seconds' -> 62.5."""
    return sum(float(n) * UNITS[u] for n, u in re.findall(r"([\d.]+) (hour|minute|second)s?", text))


def epoch_results(log: Path) -> dict[int, tuple[str, str]]:
    """{epoch: (train part, valid part)} of an ESPnet train.log; a re-logged epoch keeps its last line."""
    text = log.read_text(encoding="utf-8", errors="replace") if log.is_file() else ""
    return {int(m.group(1)): (m.group(2), m.group(3)) for m in EPOCH.finditer(text)}


def stat(part: str, name: str) -> float | None:
    match = re.search(rf"\b{name}=([-\d.e+]+)", part)
    return float(match.group(1)) if match else None


def run_seconds(epochs: dict[int, tuple[str, str]]) -> float:
    total = 0.0
    for train, valid in epochs.values():
        for part in (train, valid):
            match = TIME.search(part)
            total += seconds(match.group(1)) if match else 0.0
    return total


def test_figures(score_json: Path) -> dict:
    score = json.loads(score_json.read_text())
    fp32 = score["systems"]["fp32"]
    return {"wer": round(fp32["wer"], 2), "utterances": score["num_utterances"], "words": fp32["words"]}


def lm_figures(exp: Path, decode_dirs: list[Path]) -> dict | None:
    """{"lm_file", "train_s"} of the LM every decode_dir used, None for none; refuses a mixture."""
    try:
        lm_file = same_lm(decode_dirs)
    except DecodingNoteError as error:
        raise SystemExit(str(error)) from None
    if lm_file is None:
        return None
    wall = exp / "lm" / "train_time.json"
    if not wall.is_file():
        raise SystemExit(f"{wall} not found: decoded with {lm_file}, but stage 8's LM training has no wall clock")
    return {"lm_file": lm_file, "train_s": round(float(json.loads(wall.read_text())["seconds"]), 1)}


def load_config(config: Path) -> dict:
    """The 32-bit run's ESPnet training config ({} when it is not a mapping: output_units names it)."""
    if not config.is_file():
        raise SystemExit(f"{config} not found: collect needs the 32-bit run's ESPnet config")
    conf = yaml.safe_load(config.read_text())
    return conf if isinstance(conf, dict) else {}


def output_units(conf: dict, config: Path) -> dict:
    """{"token_type", "tokens"} of an ESPnet training config (its token_list, inline or a file)."""
    if not conf.get("token_type") or not conf.get("token_list"):
        raise SystemExit(f"{config}: no token_type or token_list; is it an ESPnet ASR training config?")
    tokens = conf["token_list"]
    if isinstance(tokens, str):
        tokens = Path(tokens).read_text().split()
    return {"token_type": conf["token_type"], "tokens": len(tokens)}


def check_upstream(conf: dict, config: Path, upstream: str, ssl_dir: Path) -> None:
    """Refuse a label the run contradicts: "ssl" needs the 32-bit model's upstream checkpoint
    (frontend_conf.path_or_url) inside stage 6's ssl_dir, with its pretrain_time.json; "random"
    needs it outside."""
    frontend = conf.get("frontend_conf")
    path = frontend.get("path_or_url") if isinstance(frontend, dict) else None
    pretrained = bool(path) and Path(path).resolve().is_relative_to(ssl_dir.resolve())
    if upstream == "ssl" and not pretrained:
        raise SystemExit(f"--upstream ssl, but {config} fine-tuned from {path!r}, not from stage 6's "
                         f"pre-training in {ssl_dir}: is it a --pretrain false run (--upstream random)?")
    if upstream == "random" and pretrained:
        raise SystemExit(f"--upstream random, but {config} fine-tuned from the pre-trained {path}: use --upstream ssl")
    if upstream == "ssl" and not (ssl_dir / "pretrain_time.json").is_file():
        raise SystemExit(f"{ssl_dir / 'pretrain_time.json'} not found: stage 6 (pre-training) has not finished")


def collect(args: argparse.Namespace) -> None:
    fp32_dir, ssl_dir = args.exp / "asr_fp32", args.exp / "upstream" / "hubert_iter0"
    finetune = epoch_results(fp32_dir / "train.log")
    if not finetune:
        raise SystemExit(f"no epoch results in {fp32_dir / 'train.log'}")
    config = fp32_dir / "config.yaml"
    conf = load_config(config)  # read once: the units and the upstream's checkpoint
    result = {"upstream": args.upstream, "units": output_units(conf, config)}
    check_upstream(conf, config, args.upstream, ssl_dir)
    for key, dset in (("test_clean", args.test_clean), ("test_other", args.test_other)):
        result[key] = test_figures(fp32_dir / f"decode_{dset}" / "score.json")
    result["lm"] = lm_figures(args.exp, [fp32_dir / f"decode_{d}" for d in (args.test_clean, args.test_other)])
    pretrain, device = 0.0, args.device
    if args.upstream == "ssl":
        timing = json.loads((ssl_dir / "pretrain_time.json").read_text())
        pretrain, device = float(timing["seconds"]), timing["device"]
    wall = fp32_dir / "train_time.json"
    if wall.is_file():
        finetune_s, finetune_from = float(json.loads(wall.read_text())["seconds"]), "stage 8 wall clock"
    else:
        finetune_s, finetune_from = run_seconds(finetune), "ESPnet epoch times"
    result.update(
        pretrain_s=round(pretrain, 1),
        finetune_s=round(finetune_s, 1),
        finetune_s_from=finetune_from,
        device=device,
        valid_cer_per_epoch=[stat(finetune[e][1], "cer_ctc") for e in sorted(finetune)],
    )
    if args.conditions:
        result["conditions"] = args.conditions
    if args.upstream == "ssl":
        pre = epoch_results(ssl_dir / "train.log")
        result["pretrain_valid_acc_m_per_epoch"] = [stat(pre[e][1], "acc_m") for e in sorted(pre)]
    args.output.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.output.with_name(f".{args.output.name}.tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, args.output)
    print(json.dumps(result, indent=2))


def table(args: argparse.Namespace) -> None:
    runs = [json.loads(path.read_text()) for path in args.files]
    print("| upstream | units | LM (training s) | test_clean WER % (words) | test_other WER % (words) | "
          "pre-training s | fine-tuning s | valid CER per epoch | device |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in runs:
        curve = " ".join(f"{c:.3f}" for c in r["valid_cer_per_epoch"] if c is not None)
        units = f"{r['units']['token_type']} ({r['units']['tokens']} tokens)" if "units" in r else "-"
        lm = f"yes ({r['lm']['train_s']:.0f})" if r.get("lm") else "none"
        print(f"| {r['upstream']} | {units} | {lm} | {r['test_clean']['wer']:.2f} ({r['test_clean']['words']}) | "
              f"{r['test_other']['wer']:.2f} ({r['test_other']['words']}) | {r['pretrain_s']:.0f} | "
              f"{r['finetune_s']:.0f} | {curve} | {r['device']} |")


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("collect", help="write the reference JSON of one run")
    p.add_argument("--exp", type=Path, required=True, help="run.sh's $work/exp")
    p.add_argument("--upstream", choices=("ssl", "random"), required=True, help="pre-trained (stage 6) or not")
    p.add_argument("--test_clean", required=True, help="Kaldi name of the clean test set, e.g. test_synth")
    p.add_argument("--test_other", required=True, help="Kaldi name of the other test set, e.g. test_other_synth")
    p.add_argument("--device", default=f"CPU ({os.cpu_count()} cores)", help="device, when no pre-training says")
    p.add_argument("--conditions", default="", help="free text: config set, overrides, machine load")
    p.add_argument("--output", type=Path, required=True)
    p.set_defaults(func=collect)
    p = commands.add_parser("table", help="Markdown table of reference JSON files")
    p.add_argument("files", type=Path, nargs="+")
    p.set_defaults(func=table)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = get_parser().parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    sys.exit(main())
