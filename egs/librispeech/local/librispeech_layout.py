"""LibriSpeech's on-disk layout, shared by the scripts that write and read it.

A LibriSpeech root holds one directory per subset (dev-clean, train-clean-100, ...):

    <root>/<subset>/<speaker>/<chapter>/<speaker>-<chapter>-<NNNN>.flac
    <root>/<subset>/<speaker>/<chapter>/<speaker>-<chapter>.trans.txt

Each transcript line is `<speaker>-<chapter>-<NNNN> UPPER CASE WORDS`; the audio is
16 kHz mono FLAC.
"""

import os
from pathlib import Path

AUDIO_SUFFIX = ".flac"
SAMPLE_RATE = 16000


def utterance_id(speaker: int | str, chapter: int | str, index: int) -> str:
    """`<speaker>-<chapter>-<NNNN>`, e.g. utterance_id(103, 1240, 7) == "103-1240-0007"."""
    return f"{speaker}-{chapter}-{index:04d}"


def transcript_path(chapter_dir: Path) -> Path:
    """`<speaker>/<chapter>/<speaker>-<chapter>.trans.txt` for a chapter directory."""
    return chapter_dir / f"{chapter_dir.parent.name}-{chapter_dir.name}.trans.txt"


def write_text_atomic(path: Path, text: str) -> None:
    """Writes `text` to `path` via a temporary name, so readers never see a partial file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
