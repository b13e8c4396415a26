#!/usr/bin/env python3
"""Language-model training text of the built-in corpus: WordNet's English, minus dev and test.

    local/lm_text.py --exclude db/LibriSynth/dev-synth db/LibriSynth/test-synth ... --output data/lm/text

The built-in corpus reads WordNet's quoted example phrases (local/synthesize_corpus.py).
WordNet's glosses hold about 117,000 definitions beside them: real English text, the
analogue of LibriSpeech's LM corpus (the text of books that are not in dev or test). One
line per definition or example, normalised as the transcripts are (upper case, letters,
apostrophes and single spaces; lines with digits or other symbols are dropped), each
keyed as a Kaldi text line (``wordnet-000001 TEXT``) for ``espnet2.bin.lm_train``.

Held-out text never enters: a line is dropped when any transcript of --exclude occurs in
it as a run of whole words. --exclude takes Kaldi ``text`` files and LibriSpeech-layout
directories (every ``*.trans.txt`` under them). --max_lines keeps the first N lines (tests
and quick runs). No line left is an error. The output is written atomically; a summary (lines kept, lines dropped as
held out, words) goes to the log.
"""
import argparse
import logging
import re
import sys
from pathlib import Path

from librispeech_layout import write_text_atomic  # local/
from synthesize_corpus import CorpusError, wordnet_glosses

WORDNET_FILES = ("data.noun", "data.verb", "data.adj", "data.adv")


class LmTextError(Exception):
    """A problem reported to the user as one line."""


def normalise(text: str) -> str | None:
    """``text`` in transcript form (upper case, [A-Z'] words, one space), or None if it has other symbols."""
    text = re.sub(r"[-,;:!?()\"/.]", " ", text)
    if not re.fullmatch(r"[A-Za-z' ]*", text):
        return None
    words = [word.strip("'") for word in text.upper().split()]
    words = [word for word in words if word]
    return " ".join(words) or None


def wordnet_lines(wordnet_dir: Path):
    """Every definition and example of WordNet's data files, normalised (None ones skipped)."""
    for gloss in wordnet_glosses(wordnet_dir, WORDNET_FILES):
        pieces = re.findall(r'"([^"]*)"', gloss) + re.sub(r'"[^"]*"', ";", gloss).split(";")
        for piece in pieces:
            text = normalise(piece)
            if text is not None:
                yield text


def read_transcripts(paths: list[Path]) -> set[str]:
    """The transcripts (second field on) of Kaldi ``text`` files and of the ``*.trans.txt`` under directories."""
    held_out = set()
    files = []
    for path in paths:
        if path.is_dir():
            found = sorted(path.rglob("*.trans.txt"))
            if not found:
                raise LmTextError(f"--exclude {path}: a directory without *.trans.txt files")
            files += found
        elif path.is_file():
            files.append(path)
        else:
            raise LmTextError(f"--exclude {path}: no such file or directory")
    for path in files:
        for line in path.read_text(encoding="utf-8").splitlines():
            parts = line.split(maxsplit=1)
            if len(parts) == 2:
                held_out.add(parts[1].strip())
    return held_out


def contains_held_out(line: str, held_out: set[str], max_words: int) -> bool:
    """True if some run of whole words of ``line`` (up to max_words long) is in ``held_out``."""
    words = line.split()
    for start in range(len(words)):
        for end in range(start + 1, min(len(words), start + max_words) + 1):
            if " ".join(words[start:end]) in held_out:
                return True
    return False


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--wordnet_dir", type=Path, default=Path("/usr/share/wordnet"), help="WordNet data files")
    parser.add_argument("--exclude", type=Path, nargs="+", required=True,
                        help="held-out text (dev, test): Kaldi text files or LibriSpeech-layout directories")
    parser.add_argument("--max_lines", type=int, default=0, help="keep the first N lines (0: all)")
    parser.add_argument("--output", type=Path, required=True, help="one normalised line per definition or example")
    args = parser.parse_args(argv)
    if args.max_lines < 0:
        parser.error(f"--max_lines {args.max_lines}: must be 0 (all) or positive")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s (lm_text) %(message)s")
    try:
        held_out = read_transcripts(args.exclude)
        if not held_out:
            raise LmTextError(f"--exclude {' '.join(map(str, args.exclude))}: no transcripts in them")
        max_words = max(len(text.split()) for text in held_out)
        kept, dropped, seen = [], 0, set()
        for line in wordnet_lines(args.wordnet_dir):
            if line in seen:
                continue
            seen.add(line)
            if contains_held_out(line, held_out, max_words):
                dropped += 1
            else:
                kept.append(line)
                if len(kept) == args.max_lines:
                    break
        if not kept:
            raise LmTextError(f"{args.wordnet_dir}: no line of LM text left ({dropped} dropped as held out)")
    except (LmTextError, CorpusError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    write_text_atomic(args.output, "".join(f"wordnet-{index:06d} {line}\n" for index, line in enumerate(kept, 1)))
    words = sum(len(line.split()) for line in kept)
    logging.info(f"{args.output}: {len(kept)} lines, {words} words; {dropped} lines dropped as they hold "
                 f"held-out text ({len(held_out)} transcripts)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
