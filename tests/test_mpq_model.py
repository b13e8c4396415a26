"""Specification of the mpq model's own logic, on stand-ins for the parts ESPnet would build
(distillation across frame counts, the epoch schedule, the refusals of training set-ups that
would silently break the search)."""
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from espnet_mpq.asr.model import MpqESPnetModel
from espnet_mpq.asr.task import MpqASRTask, MpqTrainer
from espnet_mpq.quantizers import build_config

VOCAB, DIM = 5, 4


class StandInTeacher(nn.Module):
    """encode() -> (B, T_teacher, DIM) features; ctc.ctc_lo a Linear to the vocabulary."""

    def __init__(self, frames: int):
        super().__init__()
        self.frames = frames
        self.ctc = nn.Module()
        self.ctc.ctc_lo = nn.Linear(DIM, VOCAB)

    def encode(self, speech, lengths):
        torch.manual_seed(1)
        return torch.randn(speech.size(0), self.frames, DIM), lengths


def kd_host(teacher_frames: int) -> SimpleNamespace:
    ctc = nn.Module()
    ctc.ctc_lo = nn.Linear(DIM, VOCAB)
    return SimpleNamespace(_teacher=[StandInTeacher(teacher_frames)], ctc=ctc, kd_temperature=1.0)


@pytest.mark.parametrize("teacher_frames, student_frames", [(7, 6), (6, 7), (6, 6)])
def test_distillation_uses_the_frames_both_models_have(teacher_frames, student_frames):
    host = kd_host(teacher_frames)
    speech, lengths = torch.zeros(2, 100), torch.tensor([100, 80])
    student_out = torch.randn(2, student_frames, DIM)
    student_lens = torch.tensor([student_frames, 4])
    kd = MpqESPnetModel._kd_loss(host, speech, lengths, student_out, student_lens)
    frames = min(teacher_frames, student_frames)
    t = F.log_softmax(host._teacher[0].ctc.ctc_lo(host._teacher[0].encode(speech, lengths)[0]), -1)[:, :frames]
    s = F.log_softmax(host.ctc.ctc_lo(student_out), -1)[:, :frames]
    mask = torch.arange(frames)[None] < student_lens[:, None]
    expected = ((t.exp() * (t - s)).sum(-1) * mask).sum() / mask.sum()
    assert torch.allclose(kd, expected)


def schedule_host(schedule_unit: str, searching: bool = True) -> SimpleNamespace:
    quantizer = build_config("joint", {"target_avg_bits": 3.0, "schedule_unit": schedule_unit, "search_length": 2})
    host = SimpleNamespace(
        quantizer=quantizer, searching=searching, _accum_grad=1, _update_schedule=lambda: None,
        _progress_state={"iteration": 0, "epoch_start": 0.0, "epoch_iteration": 0, "epoch_length": 0},
        mpq_epoch_start=torch.tensor(0.0), mpq_epoch_iteration=torch.tensor(0), mpq_epoch_length=torch.tensor(0),
    )
    return host


def test_an_epoch_search_without_a_known_epoch_length_is_refused():
    with pytest.raises(ValueError, match=r"schedule_unit='epoch' needs the length of epoch 1, .* schedule_unit: "
                                         r"iteration"):
        MpqESPnetModel.start_epoch(schedule_host("epoch"), 1, None)


def test_an_unknown_epoch_length_is_taken_from_the_previous_epoch():
    host = schedule_host("epoch")
    MpqESPnetModel.start_epoch(host, 1, 10)
    host._progress_state["epoch_iteration"] = 10  # epoch 1 ran 10 batches
    MpqESPnetModel.start_epoch(host, 2, None)
    host._progress_state["epoch_iteration"] = 5
    assert MpqESPnetModel.progress(host) == pytest.approx(1.5)


def test_iteration_progress_counts_optimizer_steps():
    host = schedule_host("iteration")
    MpqESPnetModel.start_epoch(host, 1, None, accum_grad=4)  # no length needed in iterations
    host._progress_state["iteration"] = 9  # forwards
    assert MpqESPnetModel.progress(host) == 2


def bare_mpq_model(groups: int = 2) -> MpqESPnetModel:
    """An MpqESPnetModel instance without ESPnet's construction: enough for the trainer's and task's checks."""
    model = MpqESPnetModel.__new__(MpqESPnetModel)
    nn.Module.__init__(model)
    model._searches = model._searching = True
    model.quantizer = build_config("joint", {"target_avg_bits": 3.0})
    model.optimizer_param_groups = lambda: [{"params": []}] * groups
    return model


def test_a_search_under_data_parallel_is_refused():
    with pytest.raises(ValueError, match=r"--ngpu 2 without --multiprocessing_distributed true .* DataParallel"):
        MpqTrainer.run(bare_mpq_model(), distributed_option=SimpleNamespace(ngpu=2, distributed=False))


@pytest.mark.parametrize("flag", ["sharded_ddp", "exclude_weight_decay"])
def test_optimizer_paths_that_would_drop_the_logits_own_group_are_refused(flag):
    args = SimpleNamespace(sharded_ddp=False, exclude_weight_decay=False, optim="adam", optim_conf={})
    setattr(args, flag, True)
    with pytest.raises(ValueError, match=rf"--{flag} true is not supported with quantizer 'joint'"):
        MpqASRTask.build_optimizers(args, bare_mpq_model())


def test_the_architecture_logits_keep_their_rate_under_a_warmup_scheduler():
    from espnet2.schedulers.warmup_lr import WarmupLR

    from espnet_mpq.asr.model import ARCH_LR_KEY
    from espnet_mpq.asr.task import with_constant_arch_lr

    weight, logits = nn.Parameter(torch.ones(3)), nn.Parameter(torch.zeros(3))
    optimizer = with_constant_arch_lr(torch.optim.Adam)(
        [{"params": [weight]}, {"params": [logits], "lr": 0.05, ARCH_LR_KEY: 0.05}], lr=1e-3)
    scheduler = WarmupLR(optimizer, warmup_steps=100)
    for _ in range(3):
        (weight.sum() + logits[0]).backward()
        optimizer.step()
        scheduler.step()
    assert logits[0].item() == pytest.approx(-0.15, abs=0.01)  # three Adam steps of about 0.05
    assert -3e-3 < weight[0].item() - 1 < 0  # the weights' warm-up rates: far below 1e-3 a step
