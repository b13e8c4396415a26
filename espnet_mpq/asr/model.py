"""The ``mpq`` model: ESPnet's ASR model + distillation from the 32-bit teacher + the size penalty.

    loss = task loss (ESPnet's CTC / attention loss, unchanged)
         + kd_weight * KL(teacher || student) on the CTC posteriors
         + size_penalty_weight * penalty(E, T)          (searching methods only)

    KL = (1 / F) sum_{b,t valid} sum_v p_T(v) (log p_T(v) - log p_S(v)),  p = softmax(logits / kd_temperature)

over the F valid frames of the batch (teacher and student posteriors cut to the
frames both have). E is the expected average bits of the quantized weights (or the
expected size in MB of the model when the quantizer has ``size_budget_mb``), T its
target (see espnet_mpq.quantizers). A target the model's quantized layers cannot meet
is refused when the model is built.

Search schedule: progress p counts fractional epochs, or optimizer steps (training
forwards / accum_grad) with ``schedule_unit: iteration``. While p < search_length,
tau follows the quantizer's annealing; at p >= search_length every layer is fixed by
the quantizer's ``allocation`` rule (espnet_mpq.core.budget), once, on every rank alike.
Each training forward reports expected_avg_bits, argmax_avg_bits, projected_avg_bits
(the bits the allocation would deploy now; refreshed every PROJECTION_INTERVAL
forwards), mean_max_prob and tau to ESPnet's reporter (train.log, tensorboard).

The teacher (an ESPnet ASR model: its config.yaml and model file) is loaded when
training starts, kept frozen and in eval mode, and is not a sub-module, so it is
never saved into the student's checkpoints. The schedule (temperature, the switch
from search to fixed bit-widths) follows the training progress kept in buffers,
so it survives ``--resume``.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F
from typeguard import typechecked

from espnet2.asr.espnet_model import ESPnetASRModel
from espnet2.torch_utils.device_funcs import force_gatherable
from espnet_mpq.asr.frontend import FRONTEND_PREFIX, S3prlMpqFrontend
from espnet_mpq.core.accounting import expected_size_mb, storage_report
from espnet_mpq.core.budget import arch_lr_groups, check_target, fix_to_allocation, search_summary
from espnet_mpq.core.transform import expected_average_bits, quantized_layers, set_temperature
from espnet_mpq.quantizers import DOWNSTREAM, JointConfig, NoneConfig, apply_quantizer

ARCH_LOGITS = ("arch_logits", "size_logits")
ARCH_LR_KEY = "mpq_arch_lr"  # an optimizer group's own constant learning rate (see espnet_mpq.asr.task)
PROJECTION_INTERVAL = 20  # training forwards between two computations of projected_avg_bits


class MpqESPnetModel(ESPnetASRModel):
    """ESPnetASRModel with distillation, size penalty and the search schedule of the frontend's quantizer."""

    @typechecked
    def __init__(
        self,
        *args,
        kd_weight: float = 1.0,
        kd_temperature: float = 1.0,
        size_penalty_weight: float = 1.0,
        teacher_config: Optional[str] = None,
        teacher_model_file: Optional[str] = None,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        if not isinstance(self.frontend, S3prlMpqFrontend):
            raise ValueError(f"model 'mpq' needs 'frontend: s3prl_mpq', got {type(self.frontend).__name__}")
        if kd_weight < 0 or size_penalty_weight < 0 or kd_temperature <= 0:
            raise ValueError(
                f"model_conf kd_weight={kd_weight}, size_penalty_weight={size_penalty_weight} must be >= 0 "
                f"and kd_temperature={kd_temperature} > 0"
            )
        if kd_weight > 0 and not (teacher_config and teacher_model_file):
            raise ValueError("model_conf kd_weight > 0 needs teacher_config and teacher_model_file "
                             "(the 32-bit model's config.yaml and .pth); set kd_weight: 0 to train without")
        self.kd_weight = kd_weight
        self.kd_temperature = kd_temperature
        self.size_penalty_weight = size_penalty_weight
        self.teacher_paths = (teacher_config, teacher_model_file)
        self._teacher: list[ESPnetASRModel] = []  # a list: not a sub-module, never in state_dict()
        self.quantizer = self.frontend.quantizer_config
        if DOWNSTREAM in self.quantizer.modules:
            apply_quantizer(self.quantizer, self, [DOWNSTREAM], exclude_prefix=FRONTEND_PREFIX)
        self._searches = isinstance(self.quantizer, JointConfig) and self.quantizer.searches
        if self._searches:
            check_target(self, self.quantizer.size_target())
        # Training progress: iterations (training forwards) and epochs, saved with the model;
        # forward reads the Python mirrors (no device-to-host reads).
        self.register_buffer("mpq_iteration", torch.tensor(0, dtype=torch.long))
        self.register_buffer("mpq_epoch_start", torch.tensor(0.0))  # completed epochs when this epoch began
        self.register_buffer("mpq_epoch_iteration", torch.tensor(0, dtype=torch.long))
        self.register_buffer("mpq_epoch_length", torch.tensor(0, dtype=torch.long))  # 0: unknown
        self._progress_state = {"iteration": 0, "epoch_start": 0.0, "epoch_iteration": 0, "epoch_length": 0}
        self._accum_grad = 1
        self._searching = self._searches
        self._projected: dict[str, float] = {}
        self._fixed_report: Optional[dict] = None
        self._last_encoder_out = None

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._progress_state = {
            "iteration": int(self.mpq_iteration), "epoch_start": float(self.mpq_epoch_start),
            "epoch_iteration": int(self.mpq_epoch_iteration), "epoch_length": int(self.mpq_epoch_length),
        }
        self._searching = None  # re-derived from the layers at the next use
        self._fixed_report = None

    # ---- schedule -------------------------------------------------------------
    def start_epoch(self, epoch: int, num_iterations: Optional[int], accum_grad: int = 1) -> None:
        """Called by the trainer before epoch ``epoch`` (1-based) with its length when known.

        An epoch-unit search needs the epoch's length to follow fractional epochs: without
        it (an iterator with no len()) the previous epoch's count is used, and the first
        epoch is refused.
        """
        state = self._progress_state
        if not num_iterations and state["epoch_iteration"] > 0:
            num_iterations = state["epoch_iteration"]  # the previous epoch's length
        if not num_iterations and self.searching and self.quantizer.schedule_unit == "epoch":
            raise ValueError(
                f"quantizer_conf schedule_unit='epoch' needs the length of epoch {epoch}, and the training "
                "iterator has no len(): use schedule_unit: iteration with search_length in optimizer steps"
            )
        state.update(epoch_start=float(epoch - 1), epoch_iteration=0, epoch_length=int(num_iterations or 0))
        self.mpq_epoch_start.fill_(state["epoch_start"])
        self.mpq_epoch_iteration.zero_()
        self.mpq_epoch_length.fill_(state["epoch_length"])
        self._accum_grad = max(int(accum_grad), 1)
        self._update_schedule()

    def end_epoch(self) -> None:
        """Called by the trainer after the epoch's last batch: fixes a search that ends here."""
        self._update_schedule()

    def progress(self) -> float:
        """Training progress in the quantizer's schedule_unit (fractional epochs, or optimizer steps)."""
        state = self._progress_state
        if getattr(self.quantizer, "schedule_unit", "epoch") == "iteration":
            return float(state["iteration"] // self._accum_grad)
        length = state["epoch_length"]
        within = min(state["epoch_iteration"] / length, 1.0) if length else 0.0
        return state["epoch_start"] + within

    def _update_schedule(self) -> None:
        if not self.searching:
            return
        config = self.quantizer
        if config.search_done(self.progress()):
            self.finish_search()
        else:
            set_temperature(self, config.temperature(self.progress()))

    def finish_search(self) -> dict[str, int]:
        """Fix every searching layer by the quantizer's allocation rule (searching quantizers); layer name -> bits."""
        config = self.quantizer
        bits = fix_to_allocation(self, config.size_target(), config.allocation)
        self._searching = False
        report = storage_report(self)
        logging.info(f"mpq: search finished at progress {self.progress():.3f} ({config.schedule_unit}); "
                     f"bit-widths fixed by allocation '{config.allocation}' for {config.size_target().describe()}: "
                     f"average {report.average_bits:.3f} bits, {report.size_mb:.4f} MB; {bits}")
        return bits

    @property
    def searching(self) -> bool:
        if self._searching is None:
            self._searching = self._searches and any(not s.is_fixed for _, s in quantized_layers(self))
        return self._searching

    # ---- teacher -------------------------------------------------------------
    def load_teacher(self) -> None:
        """Load and check the teacher (before training; the trainer calls this)."""
        if self.kd_weight == 0 or self._teacher:
            return
        config, model_file = self.teacher_paths
        for p in (config, model_file):
            if not Path(p).is_file():
                raise FileNotFoundError(f"teacher file {p} does not exist (model_conf teacher_config / "
                                        "teacher_model_file: the 32-bit model's config.yaml and .pth)")
        from espnet_mpq.asr.task import MpqASRTask

        teacher, _ = MpqASRTask.build_model_from_file(config, model_file, "cpu")
        check_teacher(self, teacher)
        teacher.eval().requires_grad_(False)
        self._teacher = [teacher]
        logging.info(f"mpq: teacher loaded from {model_file}")

    # ---- forward ---------------------------------------------------------------
    def encode(self, speech: torch.Tensor, speech_lengths: torch.Tensor):
        encoder_out, encoder_out_lens = super().encode(speech, speech_lengths)
        self._last_encoder_out = (encoder_out[0] if isinstance(encoder_out, tuple) else encoder_out,
                                  encoder_out_lens)
        return encoder_out, encoder_out_lens

    def forward(self, speech, speech_lengths, text, text_lengths, **kwargs):
        if self.training:  # progress counts the batches done before this one
            self._update_schedule()
            self.mpq_iteration += 1
            self.mpq_epoch_iteration += 1
            self._progress_state["iteration"] += 1
            self._progress_state["epoch_iteration"] += 1
        loss, stats, weight = super().forward(speech, speech_lengths, text, text_lengths, **kwargs)
        encoder_out, encoder_out_lens = self._last_encoder_out
        self._last_encoder_out = None
        stats["loss_task"] = loss.detach()
        if self.kd_weight > 0:
            self.load_teacher()
            kd = self._kd_loss(speech, speech_lengths, encoder_out, encoder_out_lens)
            loss = loss + self.kd_weight * kd
            stats["loss_kd"] = kd.detach()
        if self.searching:
            expected = self._expected_size()
            penalty = self.quantizer.size_penalty(expected, self._size_target())
            loss = loss + self.size_penalty_weight * penalty
            stats["loss_size"] = penalty.detach()
            stats.update(self._search_stats())
        elif not isinstance(self.quantizer, NoneConfig):
            stats.update(self._fixed_stats())
        stats["loss"] = loss.detach()
        # Scalars as 1-dim tensors, as ESPnet's own forward returns them: its DDP / DataParallel
        # averaging of the stats requires every entry to have the shape of ``weight``.
        return force_gatherable((loss, stats, weight), loss.device)

    def _search_stats(self) -> dict:
        """Search figures (one device transfer); the projection is refreshed every PROJECTION_INTERVAL forwards."""
        config = self.quantizer
        refresh = not self._projected or self._progress_state["iteration"] % PROJECTION_INTERVAL == 0
        summary = search_summary(self, config.size_target() if refresh else None, config.allocation)
        if "projected_avg_bits" in summary:
            self._projected = {"projected_avg_bits": summary["projected_avg_bits"]}
        summary.update(self._projected)
        summary["tau"] = config.temperature(self.progress())
        return summary

    def _fixed_stats(self) -> dict:
        """Deployed bits and compression ratios, computed once the bit-widths are fixed."""
        if self._fixed_report is None:
            report = storage_report(self)
            self._fixed_report = {
                "avg_bits": report.average_bits,
                "compression_ratio": report.compression_ratio,
                "compression_ratio_upstream": storage_report(self.frontend.upstream).compression_ratio,
            }
        return self._fixed_report

    def _expected_size(self) -> torch.Tensor:
        """Expected average bits, or expected model size in MB when the quantizer has a size budget."""
        if self.quantizer.size_budget_mb is None:
            return expected_average_bits(self)
        return expected_size_mb(self)

    def _size_target(self) -> float:
        q = self.quantizer
        return q.size_budget_mb if q.size_budget_mb is not None else q.target_avg_bits

    def _kd_loss(self, speech, speech_lengths, encoder_out, encoder_out_lens) -> torch.Tensor:
        teacher = self._teacher[0]
        if next(teacher.parameters()).device != speech.device:
            teacher.to(speech.device)
        with torch.no_grad():
            t_out, _ = teacher.encode(speech, speech_lengths)
            t_out = t_out[0] if isinstance(t_out, tuple) else t_out
            t_logp = F.log_softmax(teacher.ctc.ctc_lo(t_out) / self.kd_temperature, dim=-1)  # (B, T, V)
        s_logp = F.log_softmax(self.ctc.ctc_lo(encoder_out) / self.kd_temperature, dim=-1)  # (B, T, V)
        frames = min(t_logp.size(1), s_logp.size(1))  # T: the frames both have
        t_logp, s_logp = t_logp[:, :frames], s_logp[:, :frames]  # (B, T, V)
        mask = torch.arange(frames, device=speech.device)[None, :] < encoder_out_lens[:, None]  # (B, T)
        kl = (t_logp.exp() * (t_logp - s_logp)).sum(-1)  # (B, T)
        return (kl * mask).sum() / mask.sum().clamp_min(1)

    # ---- optimizer groups ------------------------------------------------------
    def optimizer_param_groups(self) -> list[dict]:
        """The model's parameters, then, for a search, the architecture logits in groups of equal rate.

        Layer l's logits get lr = arch_lr * n_l / mean n and no weight decay (the size
        weighting that survives Adam, see espnet_mpq.core.budget); with split_logits its
        task logits get arch_lr and its size logits arch_lr * n_l / mean n. Logits of equal
        rate share a group (``arch_lr_groups``). The groups do not depend on the mode, so a
        resumed run finds the optimizer state it saved.
        """
        rest = [p for n, p in self.named_parameters() if not n.endswith(ARCH_LOGITS)]
        groups = [{"params": rest}]
        if self._searches:
            pairs = arch_lr_groups(self, self.quantizer.arch_lr, self.quantizer.split_logits)
            groups += [{"params": params, "lr": lr, ARCH_LR_KEY: lr, "weight_decay": 0.0} for lr, params in pairs]
        return groups


def _float_shapes(model: torch.nn.Module) -> dict[str, tuple]:
    """State-dict names and shapes of a model as a 32-bit model would have them."""
    names = {n for n, _ in quantized_layers(model)}
    out = {}
    for key, value in model.state_dict().items():
        if key.startswith("mpq_"):
            continue
        head, sep, tail = key.partition(".parametrizations.weight.")
        if sep and head in names:
            if tail == "original":  # the latent weight stands for the float weight
                out[head + ".weight"] = tuple(value.shape)
            continue
        if key.endswith(".weight_g") or tail == "original0":  # a weight-normalised layer stands for its
            continue  # folded weight, of the shape of its v
        if tail == "original1":
            out[head + ".weight"] = tuple(value.shape)
            continue
        out[key[: -len("_v")] if key.endswith(".weight_v") else key] = tuple(value.shape)
    return out


def check_teacher(student: ESPnetASRModel, teacher: ESPnetASRModel) -> None:
    """Raise ValueError if the teacher's vocabulary or architecture differs from the student's."""
    if list(teacher.token_list) != list(student.token_list):
        raise ValueError(
            f"teacher vocabulary ({len(teacher.token_list)} tokens) differs from the student's "
            f"({len(student.token_list)} tokens): use the 32-bit model trained with the same token_list"
        )
    s, t = _float_shapes(student), _float_shapes(teacher)
    diff = sorted(k for k in set(s) | set(t) if s.get(k) != t.get(k))
    if diff:
        detail = ", ".join(f"{k}: student {s.get(k)} teacher {t.get(k)}" for k in diff[:3])
        raise ValueError(f"teacher architecture differs from the student's in {len(diff)} tensors ({detail})")
