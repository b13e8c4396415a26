"""ESPnet ASR decoding with espnet_mpq's classes registered; also decodes packed low-bit files.

Usage:
    python -m espnet_mpq.bin.asr_inference --asr_train_config exp/asr_joint/config.yaml \
        --asr_model_file exp/asr_joint/valid.loss.ave.pth ...   # any espnet2.bin.asr_inference argument
    python -m espnet_mpq.bin.asr_inference --asr_train_config exp/asr_joint/config.yaml \
        --asr_model_file exp/asr_joint/model.mpq ...             # the packed file of espnet_mpq.bin.export

Takes exactly the arguments of ``python -m espnet2.bin.asr_inference``. A model
file that is a packed file is loaded with its real low-bit codes (see
espnet_mpq.core.packed_file); its hypotheses equal the fake-quantized model's.
A bad config, model file or option of this package ends the run with one
``error: ...`` line and exit status 1 (espnet_mpq.bin.cli).
"""
from espnet_mpq.bin.cli import run
from espnet_mpq.register import register


def main(cmd=None):
    run(_main, cmd)


def _main(cmd=None):
    register()
    import espnet2.bin.asr_inference as inference

    from espnet_mpq.asr.task import MpqASRTask

    inference.ASRTask = MpqASRTask  # Speech2Text builds the model through this name
    inference.main(cmd)


if __name__ == "__main__":
    main()
