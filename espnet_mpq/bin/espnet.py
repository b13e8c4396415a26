"""Run one of ESPnet's own entry points without nltk's offline download errors.

Usage:
    python -m espnet_mpq.bin.espnet espnet2.bin.tokenize_text --token_type char --input text ...

Exactly ``python -m MODULE ARGS``, with nltk's downloader quiet while it runs: ESPnet's
tokenizers import g2p_en, which asks nltk to download data at import time and, offline,
prints ``[nltk_data] Error loading ...`` lines that read as a failure (see
espnet_mpq.register). Only ``espnet2.*`` modules are run.
"""
from __future__ import annotations

import runpy
import sys

from espnet_mpq.register import quiet_nltk_downloads


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        raise SystemExit(0 if argv else 2)
    module = argv[0]
    if not module.startswith("espnet2."):
        print(f"error: {module}: only ESPnet modules (espnet2.*) are run by this wrapper", file=sys.stderr)
        raise SystemExit(2)
    sys.argv = [module, *argv[1:]]
    with quiet_nltk_downloads():
        runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
