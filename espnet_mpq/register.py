"""Registration of espnet_mpq's classes in ESPnet's ASR task.

ESPnet has no plugin mechanism: a class becomes selectable in YAML by entering the
task's ClassChoices before the argument parser is built. ``register()`` adds

    frontend: s3prl_mpq   -> espnet_mpq.asr.frontend.S3prlMpqFrontend
    model:    mpq         -> espnet_mpq.asr.model.MpqESPnetModel

checking the base classes ESPnet expects. It is idempotent. The entry points
``python -m espnet_mpq.bin.asr_train`` / ``asr_inference`` call it for you.

Importing ESPnet's ASR task imports its phoneme tokenizer, whose g2p_en asks nltk to
download two data packages at import time; offline, nltk prints eight
``[nltk_data] Error loading ...`` lines that users read as a failure. ``register()``
imports ESPnet with nltk's downloader made quiet (errors discarded) for that import
only: g2p_en still gets the data where a download works, and nothing here uses it.
``quiet_nltk_downloads()`` does the same for any other import of ESPnet's tokenizers
(the recipe's shape files, ``python -m espnet_mpq.bin.espnet``).
"""
from __future__ import annotations

import contextlib
import functools
import io

__all__ = ["register", "quiet_nltk_downloads"]


@contextlib.contextmanager
def quiet_nltk_downloads():
    """Within the block, nltk.download neither prints nor asks (its errors go to a discarded buffer)."""
    try:
        import nltk
    except ImportError:  # ESPnet without nltk: nothing to silence
        yield
        return
    original = nltk.download
    nltk.download = functools.partial(original, quiet=True, print_error_to=io.StringIO())
    try:
        yield
    finally:
        nltk.download = original


def _insert(choices, key: str, cls) -> None:
    if choices.base_type is not None and not issubclass(cls, choices.base_type):
        raise TypeError(f"{cls.__name__} must subclass {choices.base_type.__name__} to be a --{choices.name}")
    present = choices.classes.get(key)
    if present is not None and present is not cls:
        raise ValueError(f"--{choices.name} {key} is already registered as {present.__name__}")
    choices.classes[key] = cls


def register() -> None:
    """Add ``s3prl_mpq`` to ESPnet's ASR frontend choices and ``mpq`` to its model choices."""
    with quiet_nltk_downloads():
        import espnet2.tasks.asr as asr

    from espnet_mpq.asr.frontend import S3prlMpqFrontend
    from espnet_mpq.asr.model import MpqESPnetModel

    _insert(asr.frontend_choices, "s3prl_mpq", S3prlMpqFrontend)
    _insert(asr.model_choices, "mpq", MpqESPnetModel)
