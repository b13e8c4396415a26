#!/usr/bin/env python3
"""Train a sentencepiece BPE model on the transcripts of a Kaldi data directory.

Usage:
    python local/train_bpe.py --text dump/raw/train_synth_filt/text --vocab_size 300 \\
        --model_prefix data/token_list/bpe300/bpe

Writes <model_prefix>.model and .vocab (sentencepiece's Python API, unigram-free
BPE, full character coverage). The token list for ESPnet is then made with
`python -m espnet2.bin.tokenize_text --token_type bpe --bpemodel <model_prefix>.model`.
"""
import argparse
import logging
import tempfile
from pathlib import Path

import sentencepiece as spm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--text", type=Path, required=True, help="Kaldi text file (`uttid WORDS`)")
    parser.add_argument("--vocab_size", type=int, required=True)
    parser.add_argument("--model_prefix", type=Path, required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    args.model_prefix.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", suffix=".txt", encoding="utf-8") as sentences:
        for line in args.text.read_text(encoding="utf-8").splitlines():
            sentences.write(line.partition(" ")[2] + "\n")
        sentences.flush()
        spm.SentencePieceTrainer.train(
            input=sentences.name, model_prefix=str(args.model_prefix), vocab_size=args.vocab_size,
            model_type="bpe", character_coverage=1.0, input_sentence_size=100_000_000,
        )
    logging.info("wrote %s.model", args.model_prefix)


if __name__ == "__main__":
    main()
