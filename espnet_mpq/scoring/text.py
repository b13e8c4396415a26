"""Kaldi-style transcript files (one ``uttid word word ...`` per line), and atomic writes.

ESPnet's decoding writes exactly this (``text`` / ``token`` files); a line with
only an utterance id is an empty transcript.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

from espnet_mpq.scoring.alignment import normalize

# How many missing utterance ids a warning names before it only counts the rest.
MAX_IDS_IN_WARNING = 10

__all__ = ["read_text", "complete_hypotheses", "write_text_atomic"]


def read_text(path: str | Path) -> dict[str, list[str]]:
    """Read a transcript file into {uttid: normalised words}, in file order.

    Raises FileNotFoundError for a missing file and ValueError for an empty one,
    one that is not UTF-8 or a repeated utterance id.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"transcript file not found: {path}")
    texts: dict[str, list[str]] = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise ValueError(f"transcript file {path} is not UTF-8 text ({e.reason} at byte {e.start})") from None
    for line_no, line in enumerate(lines, 1):
        fields = line.split(maxsplit=1)
        if not fields:
            continue
        utt_id = fields[0]
        if utt_id in texts:
            raise ValueError(f"{path}:{line_no}: utterance id {utt_id!r} appears twice")
        texts[utt_id] = normalize(fields[1]) if len(fields) > 1 else []
    if not texts:
        raise ValueError(f"transcript file is empty: {path}")
    return texts


def complete_hypotheses(refs: dict[str, list[str]], hyps: dict[str, list[str]], name: str
                        ) -> tuple[dict[str, list[str]], list[str]]:
    """Put a system's hypotheses in reference order; a missing utterance gets no words.

    Missing utterances thus count as all deletions; they are returned (and
    logged) so that a report can name them. Hypotheses for utterances that are
    not in the reference mean the files do not belong together: ValueError.
    """
    extra = [u for u in hyps if u not in refs]
    if extra:
        raise ValueError(f"system {name!r}: {len(extra)} utterance(s) not in the reference, e.g. {extra[:3]}")
    missing = [u for u in refs if u not in hyps]
    if missing:
        shown = ", ".join(missing[:MAX_IDS_IN_WARNING])
        more = f" and {len(missing) - MAX_IDS_IN_WARNING} more" if len(missing) > MAX_IDS_IN_WARNING else ""
        logging.warning("system %r: %d utterance(s) missing, scored as all deletions: %s%s",
                        name, len(missing), shown, more)
    return {u: hyps.get(u, []) for u in refs}, missing


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write a file under a temporary name in the same directory, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
