#!/usr/bin/env python3
"""Make a Kaldi data directory from one subset of a LibriSpeech-layout corpus.

Usage:
    python local/prepare_data.py --root db/LibriSpeech --subset dev-clean --out data/dev_clean
    python local/prepare_data.py --root db/LibriSynth --subset train-synth --out data/train_synth

Reads <root>/<subset>/<speaker>/<chapter>/<speaker>-<chapter>.trans.txt and the
<uttid>.flac files beside it, and writes to --out, sorted by utterance id in C
(byte) order as Kaldi requires:

    wav.scp   `<uttid> <absolute path to the flac>`: ESPnet's "sound" type reads it
              directly (--train_data_path_and_name_and_type .../wav.scp,speech,sound)
    text      `<uttid> <TRANSCRIPT>`
    utt2spk   `<uttid> <speaker>-<chapter>`
    spk2utt   `<speaker>-<chapter> <uttid> <uttid> ...`

The Kaldi "speaker" is the reader-chapter pair (e.g. 103-1240), as in Kaldi's and
ESPnet's LibriSpeech recipes: every utterance id starts with it, which Kaldi needs.

Bad utterances are reported by name on stderr and skipped, with a count at the end:
audio that is empty, unreadable, of zero length or not 16 kHz mono, or whose data
cannot be decoded to the end (every file is decoded once, so that a file damaged
past a valid header is skipped here rather than failing training); transcript lines
with an empty transcript, without an audio file, or with an id that is repeated or
from another chapter; audio files without a transcript line. The files are written
only if at least one utterance is usable. Nothing here depends on how the corpus
was made: real LibriSpeech and local/synthesize_corpus.py output take the same path.
"""

import argparse
import logging
import sys
from collections import Counter
from pathlib import Path

import soundfile

from librispeech_layout import AUDIO_SUFFIX, SAMPLE_RATE, transcript_path, write_text_atomic

# libsndfile's frame count for a FLAC whose header gives no sample count, as encoders write
# for empty input. soundfile.read (ESPnet's "sound" loader) cannot read such a file either.
UNKNOWN_FRAMES = 2**63 - 1
DECODE_BLOCK_FRAMES = 1 << 20
EXAMPLE_TRANSCRIPT = "dev-clean/84/121123/84-121123.trans.txt"


class DataError(Exception):
    """A problem reported to the user as one line, without a traceback."""


def is_subset(path: Path) -> bool:
    return path.is_dir() and next(path.glob("*/*/*.trans.txt"), None) is not None


def find_subset(root: Path, subset: str) -> Path:
    """<root>/<subset>, or a DataError saying what root or subset was expected."""
    if not root.is_dir():
        raise DataError(f"LibriSpeech root {root} is not a directory")
    subsets = sorted(path.name for path in root.iterdir() if is_subset(path))
    if not subsets:
        hint = ""
        if (root / "LibriSpeech").is_dir():
            hint = f"; did you mean --root {root / 'LibriSpeech'}?"
        elif is_subset(root):
            hint = f"; it looks like a subset itself: use --root {root.parent} --subset {root.name}"
        raise DataError(
            f"{root} is not a LibriSpeech directory: expected <subset>/<speaker>/<chapter>/"
            f"<speaker>-<chapter>.trans.txt under it, e.g. {root / EXAMPLE_TRANSCRIPT}{hint}"
        )
    if subset not in subsets:
        raise DataError(f"subset {subset!r} not found in {root}; subsets there: {', '.join(subsets)}")
    return root / subset


def audio_problem(path: Path) -> str | None:
    """Why `path` is not usable 16 kHz mono audio (`reason: detail`), or None if it is."""
    try:
        if path.stat().st_size == 0:
            return "empty audio file"
        info = soundfile.info(str(path))
    except (OSError, RuntimeError) as error:  # soundfile raises LibsndfileError, a RuntimeError
        return f"unreadable audio file: {error}"
    if info.frames in (0, UNKNOWN_FRAMES):
        return "zero-length audio: the header gives no samples"
    if info.samplerate != SAMPLE_RATE or info.channels != 1:
        return f"not {SAMPLE_RATE} Hz mono: {info.samplerate} Hz, {info.channels} channels"
    return decoding_problem(path, info.frames)


def decoding_problem(path: Path, frames: int) -> str | None:
    """Why decoding `path` to the end fails or yields other than the header's `frames` samples, or None.

    A header can be intact while the data after it is not (a truncated or damaged
    file): only decoding finds that, and training would otherwise die in libsndfile
    without naming the file. Decoded in blocks, so memory stays small.
    """
    decoded = 0
    try:
        with soundfile.SoundFile(str(path)) as f:
            while block := f.read(DECODE_BLOCK_FRAMES, dtype="int16").shape[0]:
                decoded += block
    except (OSError, RuntimeError) as error:
        return f"unreadable audio data: {' '.join(str(error).split())}"
    if decoded != frames:
        return f"truncated audio data: decoded {decoded} of the {frames} samples its header gives"
    return None


def read_transcript(path: Path) -> list[list[str]]:
    """The non-blank lines of a .trans.txt file, split into words; [] if unreadable."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        logging.warning("cannot read transcript %s: %s", path, error)
        return []
    return [line.split() for line in lines if line.strip()]


def read_chapter(chapter_dir: Path, skipped: Counter) -> dict[str, tuple[Path, str]]:
    """{uttid: (audio path, transcript)} for one chapter; reports what it skips and counts it by reason."""

    def skip(where: Path | str, problem: str) -> None:
        logging.warning("skipping %s: %s", where, problem)
        skipped[problem.split(":")[0]] += 1

    prefix = f"{chapter_dir.parent.name}-{chapter_dir.name}-"
    audio = {path.name.removesuffix(AUDIO_SUFFIX): path for path in chapter_dir.glob(f"*{AUDIO_SUFFIX}")}
    trans = transcript_path(chapter_dir)
    lines = read_transcript(trans)
    utterances = {}
    for utt_id, *words in lines:
        where = f"{utt_id} in {trans}"
        if not utt_id.startswith(prefix):
            skip(where, f"utterance id from another chapter: expected {prefix}NNNN")
        elif utt_id in utterances:
            skip(where, "duplicate utterance id")
        elif not words:
            skip(where, "empty transcript")
        elif utt_id not in audio:
            skip(where, f"no audio file: {chapter_dir / (utt_id + AUDIO_SUFFIX)} is missing")
        elif (problem := audio_problem(audio[utt_id])) is not None:
            skip(audio[utt_id], problem)
        else:
            utterances[utt_id] = (audio[utt_id].resolve(), " ".join(words))
    for utt_id in sorted(audio.keys() - {utt_id for utt_id, *_ in lines}):
        skip(audio[utt_id], f"audio file without a transcript line: not listed in {trans}")
    return utterances


def prepare(subset_dir: Path, out: Path) -> int:
    """Writes the Kaldi data directory; returns the number of utterances in it."""
    utterances: dict[str, tuple[Path, str]] = {}
    skipped: Counter = Counter()
    for chapter_dir in sorted(path for path in subset_dir.glob("*/*") if path.is_dir()):
        utterances.update(read_chapter(chapter_dir, skipped))
    if skipped:
        counts = ", ".join(f"{count} {reason}" for reason, count in sorted(skipped.items()))
        total = len(utterances) + sum(skipped.values())
        logging.warning("skipped %d of %d utterances in %s (%s)", sum(skipped.values()), total, subset_dir, counts)
    if not utterances:
        raise DataError(f"no usable utterances in {subset_dir}")

    utt_ids = sorted(utterances)  # code-point order == C locale byte order for these ASCII ids
    speaker = {utt_id: utt_id.rsplit("-", 1)[0] for utt_id in utt_ids}
    spk2utt: dict[str, list[str]] = {}
    for utt_id in utt_ids:
        spk2utt.setdefault(speaker[utt_id], []).append(utt_id)
    files = {
        "wav.scp": [f"{utt_id} {utterances[utt_id][0]}" for utt_id in utt_ids],
        "text": [f"{utt_id} {utterances[utt_id][1]}" for utt_id in utt_ids],
        "utt2spk": [f"{utt_id} {speaker[utt_id]}" for utt_id in utt_ids],
        "spk2utt": [f"{spk} {' '.join(utts)}" for spk, utts in sorted(spk2utt.items())],
    }
    for name, lines in files.items():
        write_text_atomic(out / name, "".join(f"{line}\n" for line in lines))
    return len(utt_ids)


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, required=True, help="LibriSpeech root, holding one directory per subset")
    parser.add_argument("--subset", required=True, help="subset name, e.g. train-clean-100, dev-clean, train-synth")
    parser.add_argument("--out", type=Path, required=True, help="Kaldi data directory to write")
    return parser


def main() -> None:
    args = get_parser().parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s (prepare_data) %(levelname)s: %(message)s")
    try:
        subset_dir = find_subset(args.root, args.subset)
        count = prepare(subset_dir, args.out)
    except (DataError, OSError) as error:
        logging.error("%s", error)
        sys.exit(1)
    logging.info("wrote %d utterances from %s to %s", count, subset_dir, args.out)


if __name__ == "__main__":
    main()
