"""Score several systems on one test set and test each against a baseline.

Two backends give the same records: ``python`` (jiwer alignments + this
package's MAPSSWE) and ``sctk`` (NIST sclite + sc_stats); ``auto`` picks SCTK
when it is installed. Inputs are normalised word lists (see text.read_text),
every system covering the reference's utterances in its order (see
text.complete_hypotheses).
"""
from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

from espnet_mpq.scoring.alignment import CORRECT, Alignment, ErrorCounts, align, count_errors
from espnet_mpq.scoring.mapsswe import MapssweResult, is_lossless, mapsswe_test
from espnet_mpq.scoring.sctk import find_sctk, require_sctk, run_sc_stats, run_sclite, write_trn
from espnet_mpq.scoring.text import write_text_atomic

BACKENDS = ("auto", "sctk", "python")

Texts = dict[str, list[str]]  # uttid -> words

__all__ = ["BACKENDS", "SystemScore", "score", "score_python", "score_sctk", "format_alignments"]


@dataclass(frozen=True)
class SystemScore:
    """One system's WER and, unless it is the baseline, its test against the baseline."""

    counts: ErrorCounts
    test: MapssweResult | None
    lossless: bool | None  # not significantly worse than the baseline (None for the baseline)


def _check_inputs(refs: Texts, hyps: dict[str, Texts], baseline: str) -> None:
    if baseline not in hyps:
        raise ValueError(f"baseline {baseline!r} is not one of the systems {list(hyps)}")
    for name, hyp in hyps.items():
        if list(hyp) != list(refs):
            raise ValueError(f"system {name!r} does not cover the reference's utterances in order")


def _scores(counts: dict[str, ErrorCounts], tests: dict[str, MapssweResult], baseline: str) -> dict[str, SystemScore]:
    base_errors = counts[baseline].errors
    return {
        name: SystemScore(c, tests.get(name),
                          None if name == baseline else is_lossless(base_errors, c.errors, tests[name].significant))
        for name, c in counts.items()
    }


def format_alignments(utt_ids: list[str], alignments: list[Alignment], counts: ErrorCounts) -> str:
    """Human-readable per-utterance alignments (icefall's errs-* style).

    >>> ali = align(["A", "B", "C"], ["A", "X", "C", "D"])
    >>> print(format_alignments(["u1"], [ali], count_errors([ali])), end="")
    %WER 66.67 [ 2 / 3, 1 ins, 0 del, 1 sub ]
    Correct words as they are, errors as (REF->HYP), * for no word.
    <BLANKLINE>
    u1: A (B->X) C (*->D)
    """
    lines = [
        f"%WER {counts.wer:.2f} [ {counts.errors} / {counts.words}, {counts.insertions} ins, "
        f"{counts.deletions} del, {counts.substitutions} sub ]",
        "Correct words as they are, errors as (REF->HYP), * for no word.",
        "",
    ]
    for utt_id, ali in zip(utt_ids, alignments):
        words = [r if op == CORRECT else f"({r or '*'}->{h or '*'})" for r, h, op in zip(ali.ref, ali.hyp, ali.ops)]
        lines.append(f"{utt_id}: {' '.join(words)}")
    return "\n".join(lines) + "\n"


def score_python(refs: Texts, hyps: dict[str, Texts], baseline: str,
                 errs_dir: Path | None = None) -> dict[str, SystemScore]:
    """Score with jiwer alignments and mapsswe_test(); write errs-{name}.txt into errs_dir if given."""
    _check_inputs(refs, hyps, baseline)
    alignments = {name: [align(refs[u], hyp[u]) for u in refs] for name, hyp in hyps.items()}
    counts = {name: count_errors(alis) for name, alis in alignments.items()}
    tests = {name: mapsswe_test(alignments[baseline], alis) for name, alis in alignments.items() if name != baseline}
    if errs_dir is not None:
        for name, alis in alignments.items():
            write_text_atomic(errs_dir / f"errs-{name}.txt", format_alignments(list(refs), alis, counts[name]))
    return _scores(counts, tests, baseline)


def score_sctk(refs: Texts, hyps: dict[str, Texts], baseline: str,
               errs_dir: Path | None = None) -> dict[str, SystemScore]:
    """Score with sclite and sc_stats; write sclite's alignments as errs-{name}.txt into errs_dir if given.

    Systems are called sys0, sys1, ... inside SCTK, so that any system name works.
    """
    _check_inputs(refs, hyps, baseline)
    bin_dir = require_sctk()
    logging.info("SCTK from %s", bin_dir)
    titles = {name: f"sys{i}" for i, name in enumerate(hyps)}
    with tempfile.TemporaryDirectory(prefix="espnet_mpq_sctk_") as tmp:
        work = Path(tmp)
        write_trn(work / "ref.trn", refs)
        counts = {}
        for name, hyp in hyps.items():
            hyp_trn = work / f"{titles[name]}.trn"
            write_trn(hyp_trn, hyp)
            counts[name] = run_sclite(bin_dir, work / "ref.trn", hyp_trn, titles[name], work)
            if errs_dir is not None:
                pra = (work / f"{titles[name]}.pra").read_text(encoding="utf-8", errors="replace")
                write_text_atomic(errs_dir / f"errs-{name}.txt", pra)
        tests = {
            name: run_sc_stats(bin_dir, titles[baseline], titles[name],
                              counts[baseline].errors == 0 and counts[name].errors == 0, work)
            for name in hyps if name != baseline
        }
    return _scores(counts, tests, baseline)


def score(refs: Texts, hyps: dict[str, Texts], baseline: str, backend: str = "auto",
          errs_dir: Path | None = None) -> tuple[str, dict[str, SystemScore]]:
    """Score with the chosen backend; returns the backend actually used and the scores by system name."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, not {backend!r}")
    if backend == "auto":
        backend = "sctk" if find_sctk() is not None else "python"
        logging.info("backend auto: using %s", backend)
    run = score_sctk if backend == "sctk" else score_python
    return backend, run(refs, hyps, baseline, errs_dir)
