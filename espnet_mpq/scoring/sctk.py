"""Scoring with NIST SCTK: sclite for WER, sc_stats for the MAPSSWE test.

The binaries are taken from ``$SCTK_BIN`` when it is set, else from PATH, else
from Debian's ``/usr/lib/sctk/bin`` (package ``sctk``). Per system, in a work
directory:

    sclite -r ref.trn trn -h sysK.trn trn sysK -i rm -o sgml rsum pralign -n sysK -O WORK

and per pair (baseline A, system B), on the concatenated sgml files:

    cat A.sgml B.sgml | sc_stats -p -t mapsswe -u -n OUT -O WORK    # OUT.stats.unified
    cat A.sgml B.sgml | sc_stats -p -t mapsswe -v -n OUT -O WORK    # OUT.stats.mapsswe

What they print (Debian sctk 2.4.10; sclite 2.10, sc_stats 1.3), learnt by running them:
- sclite's ``rsum`` report (sysK.raw) has a ``| Sum |`` row of raw counts:
  sentences, words | Corr Sub Del Ins Err S.Err.
- sc_stats -v (without -u) writes to OUT.stats.mapsswe a line
  ``MTCH_PR_RESULTS (systems: A B) (# segs: n) ... (mean: mu) (std dev: s)
  (Z Stat: W) (Stat Diff: Yes|No)``, numbers with 3 decimals; mu is the mean
  of e_A - e_B, so W < 0 means A makes fewer errors; "Stat Diff" means
  |W| > 1.960. With -u as well, that file stays empty. With -v and no segment
  at all (both systems error-free) sc_stats crashes (SIGSEGV): not run then.
- The unified report (-u) prints in row A, column B either ``~  0.936`` (no
  significant difference) or ``A  <0.001  ***`` (the system with fewer
  errors, then p and stars). That p is 2 * (1 - Phi(z)) with Phi looked up in
  a table at the tabulated z just below |W| (steps of 0.01, so p is slightly
  conservative), printed with 3 decimals or as ``<0.001``: W = 0.398 prints
  0.697, where erfc(0.398 / sqrt 2) = 0.691.
- sclite -i rm takes the speaker from a trn id up to its first ``-`` or ``_``
  (``(103-1240-0000)`` -> speaker 103) and prints an error, yet goes on, for
  an id with neither; such ids are written as ``(id-id)``. Speakers only
  group sclite's reports; totals and the test do not depend on them.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from espnet_mpq.scoring.alignment import ErrorCounts
from espnet_mpq.scoring.mapsswe import MapssweResult

SCTK_BIN_ENV = "SCTK_BIN"
DEBIAN_SCTK_BIN = "/usr/lib/sctk/bin"
_SPEAKER_PREFIX = re.compile(r"[^-_]+[-_]")
_SUM_LINE = re.compile(r"^\s*\|\s*Sum\s*\|([^|]*)\|([^|]*)\|", re.MULTILINE)
_MATCHED_PAIRS_LINE = re.compile(
    r"MTCH_PR_RESULTS .*\(# segs: (\d+)\).*\(mean: (\S+)\) \(std dev: (\S+)\) "
    r"\(Z Stat: (\S+)\) \(Stat Diff: (Yes|No)\)"
)

__all__ = ["find_sctk", "require_sctk", "trn_id", "write_trn", "run_sclite", "run_sc_stats"]


def find_sctk() -> Path | None:
    """Directory holding both sclite and sc_stats ($SCTK_BIN if set, else PATH, else Debian's), or None."""
    if os.environ.get(SCTK_BIN_ENV):
        candidates = [os.environ[SCTK_BIN_ENV]]
    else:
        on_path = shutil.which("sclite")
        candidates = [str(Path(on_path).parent)] if on_path else []
        candidates.append(DEBIAN_SCTK_BIN)
    for directory in candidates:
        if all(os.access(Path(directory, tool), os.X_OK) for tool in ("sclite", "sc_stats")):
            return Path(directory)
    return None


def require_sctk() -> Path:
    bin_dir = find_sctk()
    if bin_dir is None:
        raise FileNotFoundError(
            f"NIST SCTK (sclite and sc_stats) not found in ${SCTK_BIN_ENV} (when set), on PATH "
            f"or in {DEBIAN_SCTK_BIN}; install it (Debian: apt-get install sctk), set {SCTK_BIN_ENV} "
            "to its bin directory, or use the Python backend"
        )
    return bin_dir


def trn_id(utt_id: str) -> str:
    """The id written between parentheses: sclite needs a speaker prefix ending in '-' or '_'.

    >>> trn_id("103-1240-0000"), trn_id("utt7")
    ('103-1240-0000', 'utt7-utt7')
    """
    if re.search(r"[\s()]", utt_id):
        raise ValueError(f"utterance id {utt_id!r} cannot go into a trn file (whitespace or parenthesis)")
    return utt_id if _SPEAKER_PREFIX.match(utt_id) else f"{utt_id}-{utt_id}"


def write_trn(path: Path, texts: dict[str, list[str]]) -> None:
    """Write ``words ... (id)`` lines, in the dict's order."""
    ids = [trn_id(u) for u in texts]
    if len(set(ids)) != len(ids):
        raise ValueError("utterance ids collide once given a speaker prefix (e.g. 'x' and 'x-x'); rename them")
    with open(path, "w", encoding="utf-8") as f:
        for trn, words in zip(ids, texts.values()):
            f.write(f"{' '.join(words)} ({trn})\n")


def _run(command: list[str], workdir: Path, stdin: bytes | None = None) -> None:
    proc = subprocess.run(command, cwd=workdir, input=stdin, capture_output=True)
    if proc.returncode != 0:
        output = (proc.stdout + proc.stderr).decode(errors="replace")[-2000:]
        raise RuntimeError(f"{' '.join(command)} failed with exit status {proc.returncode}:\n{output}")


def run_sclite(bin_dir: Path, ref_trn: Path, hyp_trn: Path, title: str, workdir: Path) -> ErrorCounts:
    """Score one system; leaves {title}.sgml (for sc_stats), .raw and .pra (alignments) in workdir."""
    _run([str(bin_dir / "sclite"), "-r", str(ref_trn), "trn", "-h", str(hyp_trn), "trn", title,
          "-i", "rm", "-o", "sgml", "rsum", "pralign", "-n", title, "-O", str(workdir)], workdir)
    report = (workdir / f"{title}.raw").read_text(encoding="utf-8", errors="replace")
    match = _SUM_LINE.search(report)
    if match is None:
        raise RuntimeError(f"no 'Sum' line in sclite's report {workdir / (title + '.raw')}")
    _, words = (int(x) for x in match.group(1).split())
    correct, substitutions, deletions, insertions, errors, _ = (int(x) for x in match.group(2).split())
    counts = ErrorCounts(correct, substitutions, deletions, insertions)
    if counts.words != words or counts.errors != errors:
        raise RuntimeError(f"inconsistent sclite summary for {title}: {match.group(0).strip()}")
    return counts


def _unified_cell(report: str, title_a: str) -> list[str]:
    """Fields of the MP cell in row A of sc_stats's unified report, e.g. ['~', '0.936']."""
    for line in report.splitlines():
        cells = [c.strip() for c in line.split("|")]
        # "|  MP  ||  A  |  |  cell  ||  MP  |" splits into ['', 'MP', '', 'A', '', 'cell', '', 'MP', '']
        if len(cells) == 9 and cells[1] == "MP" and cells[3] == title_a:
            return cells[5].split()
    raise RuntimeError(f"no MP result for {title_a} in sc_stats's unified report")


def run_sc_stats(bin_dir: Path, title_a: str, title_b: str, both_error_free: bool,
                 workdir: Path) -> MapssweResult:
    """MAPSSWE of A against B by sc_stats, on {title_a}.sgml and {title_b}.sgml from run_sclite.

    n, mean, std and W come from the MTCH_PR_RESULTS line (3 decimals), p from
    the unified report ("<0.001" becomes 0.001; p_value_text keeps the text),
    ``significant`` is sc_stats's verdict (|W| > 1.960). ``both_error_free``:
    neither system makes an error, so there is no segment (and sc_stats -v
    would crash); only the unified report is read then, and n = W = 0.
    """
    stdin = (workdir / f"{title_a}.sgml").read_bytes() + (workdir / f"{title_b}.sgml").read_bytes()
    stats = [str(bin_dir / "sc_stats"), "-p", "-t", "mapsswe"]
    root = f"{title_a}_vs_{title_b}"
    _run(stats + ["-u", "-n", root, "-O", str(workdir)], workdir, stdin)
    cell = _unified_cell((workdir / f"{root}.stats.unified").read_text(encoding="utf-8"), title_a)
    p_text = cell[1]
    p_value = float(p_text.lstrip("<"))
    if both_error_free:
        return MapssweResult(0, 0.0, 0.0, 0.0, p_value, p_text, False)
    _run(stats + ["-v", "-n", root, "-O", str(workdir)], workdir, stdin)
    match = _MATCHED_PAIRS_LINE.search((workdir / f"{root}.stats.mapsswe").read_text(encoding="utf-8"))
    if match is None:
        raise RuntimeError(f"no MTCH_PR_RESULTS line in {workdir / (root + '.stats.mapsswe')}")
    n, mean, std, w, diff = match.groups()
    significant = diff == "Yes"
    if significant != (cell[0] != "~"):
        raise RuntimeError(f"sc_stats's reports disagree for {title_a} vs {title_b}: {diff!r} and {cell}")
    return MapssweResult(int(n), float(mean), float(std), float(w), p_value, p_text, significant)
