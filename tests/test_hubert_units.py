"""Specification of the HuBERT pre-training targets (egs/librispeech/local/hubert_units.py)."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile

from espnet_mpq.upstream_builder import STANDARD_CONV_KERNEL_STRIDES

LOCAL = Path(__file__).resolve().parents[1] / "egs" / "librispeech" / "local"
sys.path.insert(0, str(LOCAL))
import hubert_units  # noqa: E402

LENGTHS = (400, 401, 719, 720, 16000, 23456)  # samples


def conv_frames(samples: int) -> int:
    """Output frames of the published conv extractor (what the HuBERT model predicts at)."""
    for kernel, stride in STANDARD_CONV_KERNEL_STRIDES:
        samples = (samples - kernel) // stride + 1
    return samples


@pytest.fixture(scope="module")
def wav_scp(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("units")
    rng = np.random.default_rng(0)
    lines = []
    for i, n in enumerate((16000, 9000, 12345, 300)):  # the last one is shorter than one frame
        path = root / f"u{i}.flac"
        soundfile.write(path, 0.1 * rng.standard_normal(n), 16000, subtype="PCM_16")
        lines.append(f"utt{i} {path}")
    (root / "wav.scp").write_text("\n".join(lines) + "\n")
    return root / "wav.scp"


@pytest.mark.parametrize("samples", LENGTHS)
def test_one_mfcc_vector_per_model_frame(samples, tmp_path):
    path = tmp_path / "x.flac"
    soundfile.write(path, 0.1 * np.random.default_rng(1).standard_normal(samples), 16000, subtype="PCM_16")
    feats = hubert_units.mfcc_features(str(path))
    assert feats.shape == (conv_frames(samples), 39) == (hubert_units.num_frames(samples), 39)


def test_learn_then_dump_writes_units_shapes_and_the_token_list(wav_scp, tmp_path):
    hubert_units.main(["learn", "--wav_scp", str(wav_scp), "--num_clusters", "4", "--output", str(tmp_path / "km.pkl")])
    hubert_units.main(["dump", "--wav_scp", str(wav_scp), "--kmeans", str(tmp_path / "km.pkl"),
                       "--out_dir", str(tmp_path / "out")])
    out = tmp_path / "out"
    text = dict(line.split(" ", 1) for line in (out / "text").read_text().splitlines())
    assert sorted(text) == ["utt0", "utt1", "utt2"]  # utt3 is shorter than one frame
    speech_shape = dict(line.split() for line in (out / "speech_shape").read_text().splitlines())
    text_shape = dict(line.split() for line in (out / "text_shape").read_text().splitlines())
    for utt, units in text.items():
        assert len(units.split()) == int(text_shape[utt]) == conv_frames(int(speech_shape[utt]))
        assert {int(u) for u in units.split()} <= set(range(4))
    assert (out / "tokens.txt").read_text().split() == ["0", "1", "2", "3", "<unk>"]
    assert (out / ".done").exists() and not list(out.glob(".*.tmp"))


def test_the_script_prints_its_usage():
    result = subprocess.run([sys.executable, str(LOCAL / "hubert_units.py"), "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "learn" in result.stdout and "dump" in result.stdout
