"""Shared pytest fixtures."""
import pytest

from espnet_mpq.upstream_builder import save_upstream_checkpoint


def _tiny_checkpoint(tmp_path_factory, arch: str) -> str:
    path = tmp_path_factory.mktemp("upstream") / f"{arch}_tiny.pt"
    save_upstream_checkpoint(path, arch, "tiny")
    return str(path)  # s3prl's loaders call str methods on path_or_url


@pytest.fixture(scope="session")
def tiny_hubert_ckpt(tmp_path_factory) -> str:
    """Path of a random tiny HuBERT (2 layers x 64 dims), loadable as s3prl's ``hubert_local``."""
    return _tiny_checkpoint(tmp_path_factory, "hubert")


@pytest.fixture(scope="session")
def tiny_wav2vec2_ckpt(tmp_path_factory) -> str:
    """Path of a random tiny wav2vec 2.0 (2 layers x 64 dims), loadable as s3prl's ``wav2vec2_local``."""
    return _tiny_checkpoint(tmp_path_factory, "wav2vec2")
