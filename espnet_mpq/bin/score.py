#!/usr/bin/env python3
"""Usage:
    python -m espnet_mpq.bin.score --ref data/test_clean/text \\
        --hyp fp32=exp/fp32/decode_test_clean/text --hyp w4=exp/w4/decode_test_clean/text \\
        --baseline fp32 --backend auto --output_json exp/scores/test_clean.json [--errs_dir exp/scores/errs]

Scores each system's hypotheses against the reference (WER) and tests each one
against the baseline with the matched-pairs sentence-segment word error test
(MAPSSWE). A system is "lossless" when it is not significantly worse than the
baseline at alpha = 0.05: its WER is not higher, or the test finds no
significant difference.

Files are Kaldi-style ``uttid word word ...`` lines (ESPnet's decoding writes
them as ``text``). Words are compared upper-cased, split on whitespace.
Utterances missing from a hypothesis file count as all deletions (a warning
names them), and a system that misses any is never "lossless": it failed to decode
them, whatever the test says. The table shows how many each system misses, and the
JSON lists them (missing_utterances). The baseline must cover every utterance (the
others are judged against it): if it misses any, scoring stops. An empty or missing
file is an error. Refusals are one ``error: ...`` line and exit status 1.

Backends: ``sctk`` runs NIST sclite and sc_stats (found in $SCTK_BIN, on PATH or
in /usr/lib/sctk/bin), ``python`` uses jiwer and espnet_mpq.scoring.mapsswe,
``auto`` (default) takes SCTK when installed. sc_stats prints p with 3 decimals
("<0.001" is stored as 0.001 with p_value_text "<0.001").

It prints a table per system and writes (atomically) the JSON:

    {"ref": str, "backend": "sctk" | "python", "baseline": str, "alpha": 0.05,
     "normalization": str, "num_utterances": int,
     "systems": {NAME: {"hyp": str, "wer": float (percent), "errors": int, "words": int,
                        "substitutions": int, "deletions": int, "insertions": int,
                        "missing_utterances": [uttid, ...],
                        "mapsswe": null for the baseline, else
                            {"n_segments": int, "mean": float, "std": float,
                             "w": float or null (infinite), "p_value": float,
                             "p_value_text": str, "significant": bool},
                        "lossless": null for the baseline, else bool}}}

--errs_dir also writes per-system alignments, errs-NAME.txt (sclite's when the
backend is sctk).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import re
from pathlib import Path

from espnet_mpq.bin.cli import run
from espnet_mpq.scoring.backends import BACKENDS, SystemScore, score
from espnet_mpq.scoring.mapsswe import ALPHA
from espnet_mpq.scoring.text import complete_hypotheses, read_text, write_text_atomic

NORMALIZATION = "upper-case, split on whitespace"
# System names end up in file names (errs-NAME.txt).
_SYSTEM_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")


def parse_hyp(value: str) -> tuple[str, str]:
    """``NAME=path`` -> (NAME, path)."""
    name, sep, path = value.partition("=")
    if not sep or not path or not _SYSTEM_NAME.fullmatch(name):
        raise argparse.ArgumentTypeError(f"expected NAME=path with NAME of letters, digits, '._+-', got {value!r}")
    return name, path


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m espnet_mpq.bin.score",
        description="WER of each system and the MAPSSWE test against a baseline (NIST SCTK or Python).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n")[0],
    )
    parser.add_argument("--ref", required=True, help="reference transcripts, Kaldi-style text file")
    parser.add_argument("--hyp", required=True, action="append", type=parse_hyp, metavar="NAME=PATH",
                        help="a system's hypotheses (repeat for more systems)")
    parser.add_argument("--baseline", default=None, help="system the others are tested against (default: first --hyp)")
    parser.add_argument("--backend", default="auto", choices=BACKENDS, help="scorer (default: %(default)s)")
    parser.add_argument("--output_json", required=True, help="results file to write")
    parser.add_argument("--errs_dir", default=None, help="also write per-system alignments errs-NAME.txt here")
    return parser


def to_json(hyp_path: str, result: SystemScore, missing: list[str]) -> dict:
    c = result.counts
    entry = {
        "hyp": hyp_path, "wer": c.wer, "errors": c.errors, "words": c.words,
        "substitutions": c.substitutions, "deletions": c.deletions, "insertions": c.insertions,
        "missing_utterances": missing, "mapsswe": None, "lossless": result.lossless,
    }
    if result.test is not None:
        t = result.test
        entry["mapsswe"] = {
            "n_segments": t.n_segments, "mean": t.mean, "std": t.std,
            "w": t.w if math.isfinite(t.w) else None,
            "p_value": t.p_value, "p_value_text": t.p_value_text, "significant": t.significant,
        }
    return entry


def format_table(scores: dict[str, SystemScore], baseline: str, missing: dict[str, list[str]]) -> str:
    """One row per system: WER, errors/words, utterances missing, p-value against the baseline, lossless."""
    p_head = f"p vs {baseline}"
    row = (f"{{:<{max(len('system'), *map(len, scores))}}}  {{:>7}}  {{:>15}}  {{:>7}}  "
           f"{{:>{max(10, len(p_head))}}}  {{}}")
    lines = [row.format("system", "WER %", "errors/words", "missing", p_head, "lossless")]
    for name, s in scores.items():
        p = s.test.p_value_text if s.test is not None else "-"
        lossless = "-" if s.lossless is None else ("yes" if s.lossless else "no")
        lines.append(row.format(name, f"{s.counts.wer:.2f}", f"{s.counts.errors}/{s.counts.words}",
                                len(missing.get(name, [])), p, lossless))
    return "\n".join(lines)


def paths_of(args: argparse.Namespace) -> dict[str, str]:
    return dict(args.hyp)


def count_missing_against(scores: dict[str, SystemScore], missing: dict[str, list[str]]) -> dict[str, SystemScore]:
    """A system that misses utterances is not lossless (it is already scored with them as all deletions)."""
    return {name: dataclasses.replace(s, lossless=False) if missing[name] and s.lossless else s
            for name, s in scores.items()}


def main(argv: list[str] | None = None) -> None:
    run(_main, argv)


def _main(argv: list[str] | None = None) -> None:
    parser = get_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    names = [name for name, _ in args.hyp]
    if len(set(names)) != len(names):
        raise ValueError(f"--hyp: system names must be unique: {names}")
    baseline = args.baseline or names[0]
    if baseline not in names:
        raise ValueError(f"--baseline {baseline!r} is not one of the --hyp names {names}")
    errs_dir = Path(args.errs_dir) if args.errs_dir else None
    try:  # ValueError: inputs that do not belong together (cli.run prints it as one line)
        refs = read_text(args.ref)
        hyps, missing = {}, {}
        for name, path in args.hyp:
            hyps[name], missing[name] = complete_hypotheses(refs, read_text(path), name)
        if missing[baseline]:
            raise ValueError(f"baseline {baseline!r} ({paths_of(args)[baseline]}) misses {len(missing[baseline])} "
                             f"of {len(refs)} utterances (e.g. {missing[baseline][:3]}): a baseline must cover "
                             "every utterance of --ref")
        logging.info("scoring %d system(s) on %d utterances of %s", len(hyps), len(refs), args.ref)
        backend, scores = score(refs, hyps, baseline, args.backend, errs_dir)
    except OSError as e:  # unreadable inputs, or SCTK missing: a refusal like the ValueErrors
        raise ValueError(str(e)) from None
    scores = count_missing_against(scores, missing)

    print(f"backend: {backend}; lossless = not significantly worse than {baseline} (MAPSSWE, alpha {ALPHA})")
    print(format_table(scores, baseline, missing))
    paths = paths_of(args)
    result = {
        "ref": args.ref, "backend": backend, "baseline": baseline, "alpha": ALPHA,
        "normalization": NORMALIZATION, "num_utterances": len(refs),
        "systems": {name: to_json(paths[name], s, missing[name]) for name, s in scores.items()},
    }
    write_text_atomic(args.output_json, json.dumps(result, indent=2) + "\n")
    logging.info("wrote %s%s", args.output_json, f" and alignments in {errs_dir}" if errs_dir else "")


if __name__ == "__main__":
    main()
