"""What run.sh's decode_<set>/decoding.txt says: the LM a test set was decoded with.

run.sh writes ``lm_file: <path>`` (or ``lm_file: none``) there before the set's .done;
directories decoded before run.sh had LMs have no such file and were decoded without one.
"""
from __future__ import annotations

from pathlib import Path

import yaml


class DecodingNoteError(Exception):
    """A decoding.txt that run.sh did not write."""


def decoding_lm(decode_dir: Path) -> str | None:
    """The LM file ``decode_dir`` was decoded with, None for none."""
    note = decode_dir / "decoding.txt"
    if not note.is_file():
        return None  # decoded before run.sh had LMs
    fields = yaml.safe_load(note.read_text(encoding="utf-8"))
    if not isinstance(fields, dict) or "lm_file" not in fields:
        raise DecodingNoteError(f"{note}: no 'lm_file:' line; is it run.sh's?")
    return None if fields["lm_file"] in (None, "none") else str(fields["lm_file"])


def same_lm(decode_dirs: list[Path]) -> str | None:
    """The one LM every directory was decoded with (None for none); refuses a mixture."""
    used = {decoding_lm(d) for d in decode_dirs}
    if len(used) > 1:
        raise DecodingNoteError(
            f"{', '.join(map(str, decode_dirs))} were decoded with different LMs "
            f"({', '.join(sorted(str(lm) for lm in used))}): decode them again with one --use_lm setting")
    return used.pop()
