"""Word alignment of a hypothesis to its reference, and error counts (WER).

Text normalisation (both backends): words are the whitespace-separated tokens
of a transcript, upper-cased; nothing else is changed (punctuation, apostrophes
and tokens such as ``<UNK>`` are ordinary words).

The alignment is jiwer's (``jiwer.process_words``): a minimum edit distance
alignment with unit costs, so it minimises S + D + I. NIST sclite minimises
4 S + 3 D + 3 I instead, which differs in two ways:
- among alignments with equally many errors sclite takes the one with fewest
  substitutions (most correct words), jiwer not always: the S/D/I split, and
  so the places of errors, often differ slightly while S + D + I agrees;
- on long runs of errors sclite can prefer one more error for fewer
  substitutions (REF ``A B C D E``, HYP ``D E X Y Z``: jiwer 5 substitutions,
  sclite 3 deletions + 3 insertions). Such runs are rare in ASR output, but
  the two backends' error totals then differ.
"""
from __future__ import annotations

from dataclasses import dataclass

import jiwer

# One letter per aligned position, as in sclite's alignment reports.
CORRECT, SUBSTITUTION, DELETION, INSERTION = "C", "S", "D", "I"

_OPS_OF_CHUNK = {"equal": CORRECT, "substitute": SUBSTITUTION, "delete": DELETION, "insert": INSERTION}

__all__ = [
    "CORRECT",
    "SUBSTITUTION",
    "DELETION",
    "INSERTION",
    "Alignment",
    "ErrorCounts",
    "normalize",
    "align",
    "count_errors",
]


def normalize(text: str) -> list[str]:
    """Words of a transcript as scored: upper-cased, split on whitespace."""
    return text.upper().split()


@dataclass(frozen=True)
class Alignment:
    """One utterance's hypothesis aligned to its reference.

    ``ops[k]`` is the operation at aligned position k (one of ``CSDI``);
    ``ref[k]`` is None for an insertion, ``hyp[k]`` is None for a deletion.
    """

    ref: tuple[str | None, ...]
    hyp: tuple[str | None, ...]
    ops: str

    def count(self, op: str) -> int:
        return self.ops.count(op)


@dataclass(frozen=True)
class ErrorCounts:
    """Word counts of one system over a test set; WER = (S + D + I) / (C + S + D)."""

    correct: int
    substitutions: int
    deletions: int
    insertions: int

    @property
    def words(self) -> int:
        """Reference words."""
        return self.correct + self.substitutions + self.deletions

    @property
    def errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions

    @property
    def wer(self) -> float:
        """Word error rate in percent (0 when the reference has no words)."""
        return 100.0 * self.errors / self.words if self.words else 0.0


def align(ref: list[str], hyp: list[str]) -> Alignment:
    """Align two word lists with jiwer (unit-cost Levenshtein).

    >>> align(["A", "B", "C"], ["A", "X", "C", "D"]).ops
    'CSCI'
    """
    if not ref or not hyp:  # jiwer 3 rejects an empty reference; the answer is trivial anyway
        return Alignment(tuple(ref) + (None,) * len(hyp), (None,) * len(ref) + tuple(hyp),
                         DELETION * len(ref) + INSERTION * len(hyp))
    out = jiwer.process_words(" ".join(ref), " ".join(hyp))
    ref_ali: list[str | None] = []
    hyp_ali: list[str | None] = []
    ops: list[str] = []
    for chunk in out.alignments[0]:
        op = _OPS_OF_CHUNK[chunk.type]
        ref_words = ref[chunk.ref_start_idx:chunk.ref_end_idx]
        hyp_words = hyp[chunk.hyp_start_idx:chunk.hyp_end_idx]
        length = max(len(ref_words), len(hyp_words))  # "equal"/"substitute" chunks pair words one to one
        ref_ali += ref_words or [None] * length
        hyp_ali += hyp_words or [None] * length
        ops += [op] * length
    return Alignment(tuple(ref_ali), tuple(hyp_ali), "".join(ops))


def count_errors(alignments: list[Alignment]) -> ErrorCounts:
    """Sum the operation counts of many utterances."""
    return ErrorCounts(
        correct=sum(a.count(CORRECT) for a in alignments),
        substitutions=sum(a.count(SUBSTITUTION) for a in alignments),
        deletions=sum(a.count(DELETION) for a in alignments),
        insertions=sum(a.count(INSERTION) for a in alignments),
    )
