"""ESPnet ASR decoding with espnet_mpq's classes registered; also decodes packed low-bit files.

Usage:
    python -m espnet_mpq.bin.asr_inference --asr_train_config exp/asr_joint/config.yaml \
        --asr_model_file exp/asr_joint/latest.pth ...           # any espnet2.bin.asr_inference argument
    python -m espnet_mpq.bin.asr_inference --asr_train_config exp/asr_joint/config.yaml \
        --asr_model_file exp/asr_joint/model.mpq ...             # the packed file of espnet_mpq.bin.export

Takes the arguments of ``python -m espnet2.bin.asr_inference``, and one more:
``--ctc_greedy true`` (or ``ctc_greedy: true`` in the --config YAML) decodes a CTC
model by best path instead of ESPnet's prefix beam search (espnet_mpq.asr.ctc_greedy;
needs ctc_weight 1.0, nbest 1 and no language model, refused otherwise). A model
file that is a packed file is loaded with its real low-bit codes (see
espnet_mpq.core.packed_file); its hypotheses equal the fake-quantized model's.
Either way the quantized layers are stripped once after loading: each weight is
replaced by its effective weight W_eff (the deployed bit-width, no Gumbel noise),
so decoding runs plain float layers and never recomputes W_eff per forward.
A bad config, model file or option of this package ends the run with one
``error: ...`` line and exit status 1 (espnet_mpq.bin.cli).
"""
import logging
from pathlib import Path

import yaml

from espnet_mpq.bin.cli import run
from espnet_mpq.register import register


def decoding_task():
    """The ASR task whose ``build_model_from_file`` returns the model with its weights at W_eff."""
    from espnet_mpq.asr.task import MpqASRTask
    from espnet_mpq.core.transform import quantized_layers, strip

    class DecodingTask(MpqASRTask):
        @classmethod
        def build_model_from_file(cls, config_file=None, model_file=None, device="cpu"):
            model, args = super().build_model_from_file(config_file, model_file, device)
            layers = len(list(quantized_layers(model)))
            strip(model.eval())
            logging.info(f"mpq: {layers} quantized weights fixed at their effective weight W_eff for decoding")
            return model, args

    return DecodingTask


def check_beam_size(options: dict) -> None:
    """Refuse a beam wider than the model's token list (ESPnet's beam search fails at its first
    step with torch's "selected index k out of range")."""
    config = options.get("asr_train_config")
    if not config or not Path(config).is_file():
        return  # ESPnet names a missing config itself
    tokens = (yaml.safe_load(Path(config).read_text(encoding="utf-8")) or {}).get("token_list")
    if isinstance(tokens, str):
        tokens = Path(tokens).read_text(encoding="utf-8").split() if Path(tokens).is_file() else None
    beam = options.get("beam_size")
    if isinstance(tokens, list) and isinstance(beam, int) and beam > len(tokens):
        raise ValueError(f"beam_size {beam}: at most the model's {len(tokens)} output tokens ({config})")


def main(cmd=None):
    run(_main, cmd)


def _main(cmd=None):
    register()
    import sys

    import espnet2.bin.asr_inference as inference
    from espnet.utils.cli_utils import get_commandline_args
    from espnet2.utils.types import str2bool

    print(get_commandline_args(), file=sys.stderr)  # as espnet2.bin.asr_inference.main
    parser = inference.get_parser()
    parser.add_argument("--ctc_greedy", type=str2bool, default=False,
                        help="espnet_mpq: CTC best-path decoding instead of the prefix beam search")
    options = vars(parser.parse_args(cmd))
    options.pop("config", None)
    inference.ASRTask = decoding_task()  # Speech2Text builds the model through this name
    speech2text, greedy = inference.Speech2Text, options.pop("ctc_greedy")
    if not isinstance(greedy, bool):  # a YAML number is not converted by argparse
        raise ValueError(f"ctc_greedy {greedy!r}: allowed true or false")
    if greedy:
        from espnet_mpq.asr.ctc_greedy import GreedyCTCSpeech2Text, check_greedy_options

        check_greedy_options(options)
        inference.Speech2Text = GreedyCTCSpeech2Text  # inference() builds its decoder through this name
    else:
        check_beam_size(options)
    try:
        inference.inference(**options)
    finally:
        inference.Speech2Text = speech2text


if __name__ == "__main__":
    main()
