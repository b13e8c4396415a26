"""ESPnet ASR training with espnet_mpq's classes registered.

Usage:
    python -m espnet_mpq.bin.asr_train --config conf/tuning/train_mpq_joint.yaml \
        --init_param exp/asr_fp32/valid.loss.best.pth ...   # any espnet2.bin.asr_train argument

Takes exactly the arguments of ``python -m espnet2.bin.asr_train``; adds the
``s3prl_mpq`` frontend and the ``mpq`` model, gives the architecture logits their
own learning rate, and drives the search schedule (see espnet_mpq.asr.task). Before
ESPnet starts, each --init_param file and, with --resume true, OUTPUT_DIR/checkpoint.pth
is checked to be a whole torch checkpoint (see packed_file.is_packed_file).
A bad config, model file or option of this package ends the run with one
``error: ...`` line and exit status 1 (espnet_mpq.bin.cli).
"""
import argparse
from pathlib import Path

from espnet_mpq.bin.cli import run
from espnet_mpq.core.packed_file import is_packed_file
from espnet_mpq.register import register


def main(cmd=None):
    run(_main, cmd)


def check_checkpoints(cmd=None) -> None:
    """Refuse, naming the file, an --init_param file or a checkpoint.pth to resume from that is damaged.

    ESPnet reads both with torch.load, which dies without naming a truncated file
    (a run killed while writing checkpoint.pth leaves one) and does not notice a changed byte.
    """
    from espnet2.utils.types import str2bool

    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--init_param", nargs="*", default=[])
    parser.add_argument("--output_dir")
    parser.add_argument("--resume", default="false")
    args, _ = parser.parse_known_args(cmd)
    for spec in args.init_param:
        path = spec.split(":")[0]
        if is_packed_file(path):
            raise ValueError(f"--init_param {path} is a packed file: initialise from the training's .pth")
    checkpoint = Path(args.output_dir or ".") / "checkpoint.pth"
    if str2bool(args.resume) and checkpoint.exists():
        try:
            is_packed_file(checkpoint)
        except ValueError as e:
            raise ValueError(f"cannot resume: {e}; delete {checkpoint} to restart the training") from None


def _main(cmd=None):
    check_checkpoints(cmd)
    register()
    from espnet_mpq.asr.task import MpqASRTask

    MpqASRTask.main(cmd=cmd)


if __name__ == "__main__":
    main()
