"""ASRTask and Trainer subclasses that drive the ``mpq`` model; everything else is ESPnet's own.

- MpqTrainer tells the model where training is (epoch and its length) before each
  epoch, and loads the teacher before the first step, so a bad teacher stops the
  run before any training.
- MpqASRTask gives the architecture logits their own learning rate and no weight
  decay, uses MpqTrainer, and builds models from packed low-bit files too.
"""
from __future__ import annotations

import logging
from pathlib import Path

from espnet2.tasks.asr import ASRTask
from espnet2.train.trainer import Trainer
from espnet_mpq.asr.model import MpqESPnetModel
from espnet_mpq.core.packed_file import is_packed_file, load_packed


def _unwrap(model):
    return getattr(model, "module", model)  # DistributedDataParallel / DataParallel


class MpqTrainer(Trainer):
    @classmethod
    def run(cls, model, *args, **kwargs):
        if isinstance(_unwrap(model), MpqESPnetModel):
            _unwrap(model).load_teacher()
        return super().run(model, *args, **kwargs)

    @classmethod
    def train_one_epoch(cls, model, iterator, optimizers, schedulers, scaler, reporter, *args, **kwargs):
        inner = _unwrap(model)
        if isinstance(inner, MpqESPnetModel):
            try:
                length = len(iterator)
            except TypeError:
                length = None
            inner.start_epoch(reporter.get_epoch(), length)
        return super().train_one_epoch(model, iterator, optimizers, schedulers, scaler, reporter, *args, **kwargs)


class MpqASRTask(ASRTask):
    trainer = MpqTrainer

    @classmethod
    def build_optimizers(cls, args, model):
        inner = _unwrap(model)
        if not isinstance(inner, MpqESPnetModel) or args.sharded_ddp or args.exclude_weight_decay:
            return super().build_optimizers(args, model)
        from espnet2.tasks.abs_task import optim_classes

        optim_class = optim_classes.get(args.optim)
        if optim_class is None:
            raise ValueError(f"--optim must be one of {list(optim_classes)}: {args.optim}")
        groups = inner.optimizer_param_groups()
        logging.info(f"mpq: optimizer groups of {[sum(p.numel() for p in g['params']) for g in groups]} params")
        return [optim_class(groups, **args.optim_conf)]

    @classmethod
    def build_model_from_file(cls, config_file=None, model_file=None, device="cpu"):
        """ESPnet's loader; a packed file (espnet_mpq.bin.export) is loaded with load_packed."""
        if model_file is None or not is_packed_file(model_file):
            return super().build_model_from_file(config_file, model_file, device)
        config_file = config_file or Path(model_file).parent / "config.yaml"
        model, args = super().build_model_from_file(config_file, None, "cpu")
        load_packed(model, model_file)
        return model.to(device), args
