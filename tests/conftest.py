"""Shared pytest fixtures."""
import os
from dataclasses import dataclass
from pathlib import Path

# Triton's interpreter runs the GPU kernel's tests on the CPU. triton.jit decides at import whether it
# interprets, so this is set before anything imports triton (the kernel stays off unless a test sets
# ESPNET_MPQ_TRITON=1).
os.environ["TRITON_INTERPRET"] = "1"

import pytest

from espnet_mpq.upstream_builder import save_upstream_checkpoint


def _tiny_checkpoint(tmp_path_factory, arch: str) -> str:
    path = tmp_path_factory.mktemp("upstream") / f"{arch}_tiny.pt"
    save_upstream_checkpoint(path, arch, "tiny")
    return str(path)  # s3prl's loaders call str methods on path_or_url


@pytest.fixture(scope="session")
def wavs():
    """Two utterances of noise, (2, 4000) waveforms and their lengths (2,)."""
    import torch

    generator = torch.Generator().manual_seed(0)
    return torch.randn(2, 4000, generator=generator) * 0.1, torch.tensor([4000, 3200])


@pytest.fixture(scope="session")
def tiny_hubert_ckpt(tmp_path_factory) -> str:
    """Path of a random tiny HuBERT (2 layers x 64 dims), loadable as s3prl's ``hubert_local``."""
    return _tiny_checkpoint(tmp_path_factory, "hubert")


@pytest.fixture(scope="session")
def tiny_espnet_hubert_ckpt(tmp_path_factory) -> str:
    """Path of a random tiny ESPnet HuBERT (torchaudio_hubert, 2 layers x 64 dims) with its config.yaml beside it,
    loadable as s3prl's ``espnet_hubert_local``."""
    path = tmp_path_factory.mktemp("upstream") / "espnet_hubert_tiny" / "model.pth"
    save_upstream_checkpoint(path, "espnet_hubert", "tiny", num_classes=20)
    return str(path)


@pytest.fixture(scope="session")
def tiny_wav2vec2_ckpt(tmp_path_factory) -> str:
    """Path of a random tiny wav2vec 2.0 (2 layers x 64 dims), loadable as s3prl's ``wav2vec2_local``."""
    return _tiny_checkpoint(tmp_path_factory, "wav2vec2")


@dataclass(frozen=True)
class TinyAsrCorpus:
    """An eight-utterance ESPnet data set: Kaldi-style files, char tokens, shape files."""

    root: Path
    train: Path  # wav.scp, text, speech_shape, text_shape
    valid: Path  # the first utterances of train, same files
    token_list: Path  # <blank>, <unk>, <space>, letters, <sos/eos>

    def data_args(self) -> list[str]:
        """espnet2.bin.asr_train arguments for these data sets."""
        args = []
        for split, d in (("train", self.train), ("valid", self.valid)):
            args += [f"--{split}_data_path_and_name_and_type", f"{d / 'wav.scp'},speech,sound",
                     f"--{split}_data_path_and_name_and_type", f"{d / 'text'},text,text",
                     f"--{split}_shape_file", str(d / "speech_shape"),
                     f"--{split}_shape_file", str(d / "text_shape")]
        return args


TINY_WORDS = ("A", "BIG", "CAT", "DOG", "EATS", "FISH")


@pytest.fixture(scope="session")
def tiny_asr_corpus(tmp_path_factory) -> TinyAsrCorpus:
    return make_tiny_asr_corpus(tmp_path_factory.mktemp("corpus"))


def make_tiny_asr_corpus(root: Path) -> TinyAsrCorpus:
    """8 training utterances (0.8-1.2 s of noise, 3 words each) and the first 4 of them as a valid set."""
    import numpy as np
    import soundfile as sf

    rng = np.random.default_rng(0)
    utts = []
    for i in range(8):
        samples = int(16000 * rng.uniform(0.8, 1.2))
        wav = root / "wav" / f"u{i:02d}.wav"
        wav.parent.mkdir(exist_ok=True)
        sf.write(wav, (0.1 * rng.standard_normal(samples)).astype("float32"), 16000)
        utts.append((f"utt{i:02d}", wav, samples, " ".join(rng.choice(TINY_WORDS, 3))))
    for split, subset in (("train", utts), ("valid", utts[:4])):
        d = root / split
        d.mkdir()
        files = {"wav.scp": [f"{u} {w}" for u, w, _, _ in subset],
                 "text": [f"{u} {t}" for u, _, _, t in subset],
                 "speech_shape": [f"{u} {n}" for u, _, n, _ in subset],
                 "text_shape": [f"{u} {len(t)}" for u, _, _, t in subset]}
        for name, lines in files.items():
            (d / name).write_text("\n".join(lines) + "\n")
    tokens = ["<blank>", "<unk>", "<space>", *sorted(set("".join(TINY_WORDS))), "<sos/eos>"]
    (root / "tokens.txt").write_text("\n".join(tokens) + "\n")
    return TinyAsrCorpus(root, root / "train", root / "valid", root / "tokens.txt")
