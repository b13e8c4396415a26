"""ESPnet ASR training with espnet_mpq's classes registered.

Usage:
    python -m espnet_mpq.bin.asr_train --config conf/tuning/train_mpq_joint.yaml \
        --init_param exp/asr_fp32/valid.loss.best.pth ...   # any espnet2.bin.asr_train argument

Takes exactly the arguments of ``python -m espnet2.bin.asr_train``; adds the
``s3prl_mpq`` frontend and the ``mpq`` model, gives the architecture logits their
own learning rate, and drives the search schedule (see espnet_mpq.asr.task).
A bad config, model file or option of this package ends the run with one
``error: ...`` line and exit status 1 (espnet_mpq.bin.cli).
"""
from espnet_mpq.bin.cli import run
from espnet_mpq.register import register


def main(cmd=None):
    run(_main, cmd)


def _main(cmd=None):
    register()
    from espnet_mpq.asr.task import MpqASRTask

    MpqASRTask.main(cmd=cmd)


if __name__ == "__main__":
    main()
