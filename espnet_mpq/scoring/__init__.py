"""WER and the MAPSSWE significance test, with jiwer or NIST SCTK. Pure Python: no torch, no espnet.

Example:

>>> from espnet_mpq.scoring import align, count_errors, mapsswe_test
>>> ref = "THE CAT SAT ON THE MAT".split()
>>> a, b = align(ref, "THE CAT SAT ON THE MAT".split()), align(ref, "THE CAT SAT ON MAT".split())
>>> count_errors([b]).wer
16.666666666666668
>>> mapsswe_test([a], [b]).n_segments, mapsswe_test([a], [b]).p_value   # one segment: no test possible
(1, 1.0)
"""
from espnet_mpq.scoring.alignment import Alignment, ErrorCounts, align, count_errors, normalize
from espnet_mpq.scoring.backends import BACKENDS, SystemScore, score, score_python, score_sctk
from espnet_mpq.scoring.mapsswe import ALPHA, MapssweResult, is_lossless, mapsswe_test, segment_errors
from espnet_mpq.scoring.sctk import find_sctk
from espnet_mpq.scoring.text import complete_hypotheses, read_text, write_text_atomic

__all__ = [
    "ALPHA",
    "BACKENDS",
    "Alignment",
    "ErrorCounts",
    "MapssweResult",
    "SystemScore",
    "align",
    "complete_hypotheses",
    "count_errors",
    "find_sctk",
    "is_lossless",
    "mapsswe_test",
    "normalize",
    "read_text",
    "score",
    "score_python",
    "score_sctk",
    "segment_errors",
    "write_text_atomic",
]
