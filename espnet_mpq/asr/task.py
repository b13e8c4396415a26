"""ASRTask and Trainer subclasses that drive the ``mpq`` model; everything else is ESPnet's own.

- MpqTrainer tells the model where training is (epoch, its length, accum_grad)
  before each epoch, and loads the teacher before the first step, so a bad teacher
  stops the run before any training. A search under DataParallel (``--ngpu`` > 1
  without ``--multiprocessing_distributed``) is refused: its per-forward replicas
  would drop the search's state (progress, the switch to fixed bit-widths).
- MpqASRTask gives each layer's architecture logits their own constant learning rate
  and no weight decay (refusing ``--sharded_ddp`` / ``--exclude_weight_decay``, whose
  optimizers would silently give the logits the main LR and weight decay), uses
  MpqTrainer, and builds models from packed low-bit files too. ESPnet's scheduler
  (warm-up, decay) drives the weights only: the optimizer puts every logit group back
  at its own rate before each step, so a search of S steps moves the largest layer's
  logits by at most about arch_lr x S, whatever the weights' schedule.
"""
from __future__ import annotations

import logging
from pathlib import Path

from espnet2.tasks.asr import ASRTask
from espnet2.train.trainer import Trainer
from espnet_mpq.asr.model import ARCH_LR_KEY, MpqESPnetModel
from espnet_mpq.core.packed_file import is_packed_file, load_packed


def with_constant_arch_lr(optim_class: type) -> type:
    """A subclass of ``optim_class`` whose step() first sets each group carrying ARCH_LR_KEY to that rate."""

    def step(self, *args, **kwargs):
        for group in self.param_groups:
            if ARCH_LR_KEY in group:
                group["lr"] = group[ARCH_LR_KEY]
        return optim_class.step(self, *args, **kwargs)

    return type(optim_class.__name__, (optim_class,), {"step": step, "__module__": __name__})


def _unwrap(model):
    return getattr(model, "module", model)  # DistributedDataParallel / DataParallel


class MpqTrainer(Trainer):
    @classmethod
    def run(cls, model, *args, **kwargs):
        distributed = kwargs.get("distributed_option", args[-1] if args else None)
        if isinstance(model, MpqESPnetModel):
            if model.searching and getattr(distributed, "ngpu", 0) > 1 and not getattr(distributed, "distributed", 1):
                raise ValueError(
                    f"--ngpu {distributed.ngpu} without --multiprocessing_distributed true trains with DataParallel, "
                    "whose per-forward replicas drop the bit-width search's state: use "
                    "--multiprocessing_distributed true, or --ngpu 1"
                )
            model.load_teacher()
        return super().run(model, *args, **kwargs)

    @classmethod
    def train_one_epoch(cls, model, iterator, optimizers, schedulers, scaler, reporter, *args, **kwargs):
        inner = _unwrap(model)
        if isinstance(inner, MpqESPnetModel):
            try:
                length = len(iterator)
            except TypeError:
                length = None
            options = args[1] if len(args) > 1 else kwargs.get("options")
            inner.start_epoch(reporter.get_epoch(), length, getattr(options, "accum_grad", 1))
        result = super().train_one_epoch(model, iterator, optimizers, schedulers, scaler, reporter, *args, **kwargs)
        if isinstance(inner, MpqESPnetModel):
            inner.end_epoch()  # a search that ends with this epoch is fixed before validation and the checkpoint
        return result


class MpqASRTask(ASRTask):
    trainer = MpqTrainer

    @classmethod
    def build_optimizers(cls, args, model):
        inner = _unwrap(model)
        if not isinstance(inner, MpqESPnetModel):
            return super().build_optimizers(args, model)
        for flag in ("sharded_ddp", "exclude_weight_decay"):
            if getattr(args, flag, False) and len(inner.optimizer_param_groups()) > 1:
                raise ValueError(
                    f"--{flag} true is not supported with quantizer '{inner.quantizer.name}': its optimizer would "
                    "give the architecture logits the main learning rate and weight decay; set --"
                    f"{flag} false"
                )
        if args.sharded_ddp or args.exclude_weight_decay:
            return super().build_optimizers(args, model)
        from espnet2.tasks.abs_task import optim_classes

        optim_class = optim_classes.get(args.optim)
        if optim_class is None:
            raise ValueError(f"--optim must be one of {list(optim_classes)}: {args.optim}")
        groups = inner.optimizer_param_groups()
        logging.info(f"mpq: optimizer groups of {[sum(p.numel() for p in g['params']) for g in groups]} params")
        return [with_constant_arch_lr(optim_class)(groups, **args.optim_conf)]

    @classmethod
    def build_model_from_file(cls, config_file=None, model_file=None, device="cpu"):
        """ESPnet's loader; a packed file (espnet_mpq.bin.export) is loaded with load_packed."""
        if model_file is None or not is_packed_file(model_file):
            return super().build_model_from_file(config_file, model_file, device)
        config_file = config_file or Path(model_file).parent / "config.yaml"
        model, args = super().build_model_from_file(config_file, None, "cpu")
        load_packed(model, model_file)
        return model.to(device), args
