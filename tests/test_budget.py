"""Specification of keeping the budget: the allocation rule, the feasibility check, the size-weighted search,
and the supernet state that checkpoint averaging must not corrupt."""
import itertools

import numpy as np
import pytest
import torch
from torch import nn

from espnet_mpq.core import allocation
from espnet_mpq.core.allocation import InfeasibleBudget, allocate_budget
from espnet_mpq.core.budget import (
    SizeTarget,
    arch_lr_scales,
    check_target,
    fix_to_allocation,
    search_summary,
)
from espnet_mpq.core.packed_file import load_packed, save_packed
from espnet_mpq.core.supernet import CheckpointAverageError
from espnet_mpq.core.transform import expected_average_bits, prepare, quantized_layers
from espnet_mpq.core.accounting import storage_report

BITS = (1, 2, 3, 4, 8)


def brute_force(log_probs, numels, bits, lo, hi):
    """The best total log-probability of any choice inside [lo, hi] (None if there is none)."""
    best = None
    for combo in itertools.product(*[range(len(b)) for b in bits]):
        total = sum(n * b[k] for n, b, k in zip(numels, bits, combo))
        if lo <= total <= hi:
            value = sum(lp[k] for lp, k in zip(log_probs, combo))
            best = value if best is None else max(best, value)
    return best


@pytest.mark.parametrize("seed", range(40))
def test_budget_allocation_is_the_most_probable_choice_inside_the_window(seed):
    rng = np.random.default_rng(seed)
    layers = int(rng.integers(1, 5))
    numels = [int(n) for n in rng.integers(10, 3000, layers)]
    log_probs = [np.log(rng.dirichlet(np.ones(len(BITS)))) for _ in range(layers)]
    target = rng.uniform(1.2, 7.5)
    n = sum(numels)
    lo, hi = (target - 0.05) * n, target * n
    best = brute_force(log_probs, numels, [BITS] * layers, lo, hi)
    if best is None:
        with pytest.raises(InfeasibleBudget):
            allocate_budget(log_probs, numels, [BITS] * layers, lo, hi)
        return
    picks = allocate_budget(log_probs, numels, [BITS] * layers, lo, hi)
    assert lo <= sum(m * BITS[k] for m, k in zip(numels, picks)) <= hi
    assert sum(lp[k] for lp, k in zip(log_probs, picks)) == pytest.approx(best)


def test_the_rounded_dp_of_large_models_still_keeps_the_window(monkeypatch):
    monkeypatch.setattr(allocation, "MAX_EXACT_CELLS", 10)  # force the rounded grid
    rng = np.random.default_rng(1)
    numels = [int(n) for n in rng.integers(10_000, 2_000_000, 60)]
    log_probs = [np.log(rng.dirichlet(np.ones(len(BITS)))) for _ in numels]
    n = sum(numels)
    for target in (1.5, 2.25, 3.0, 4.5, 7.0):
        picks = allocate_budget(log_probs, numels, [BITS] * len(numels), (target - 0.05) * n, target * n)
        assert target - 0.05 <= sum(m * BITS[k] for m, k in zip(numels, picks)) / n <= target


def test_ties_prefer_more_bits_and_repeat_exactly():
    flat = [np.zeros(3)] * 2
    first = allocate_budget(flat, [100, 100], [(2, 4, 8)] * 2, 0, 1200)
    assert first == [2, 1] or first == [1, 2]  # 8 + 4 bits: the largest total that fits
    assert all(allocate_budget(flat, [100, 100], [(2, 4, 8)] * 2, 0, 1200) == first for _ in range(3))


def toy_model(sizes=(8, 32), candidates=BITS) -> nn.Module:
    """Linear layers of ``sizes[i] x sizes[i]`` weights, each a supernet over ``candidates``."""
    model = nn.Sequential(*[nn.Linear(s, s, bias=False) for s in sizes])
    prepare(model, candidate_bits=list(candidates))
    return model


def test_a_target_outside_the_floor_and_ceiling_is_refused_naming_them():
    model = toy_model(candidates=(2, 4, 8))
    with pytest.raises(ValueError, match=r"target_avg_bits=1.5 is outside .* floor 2, ceiling 8 average bits"):
        check_target(model, SizeTarget(avg_bits=1.5))
    with pytest.raises(ValueError, match=r"size_budget_mb=1e-05 is outside .* floor .*, ceiling .* MB"):
        check_target(model, SizeTarget(size_mb=1e-5))
    check_target(model, SizeTarget(avg_bits=4.0))  # inside, and 64 x 4 + 1024 x 4 bits meet it exactly
    with pytest.raises(ValueError, match=r"target_avg_bits=3.5 cannot be met .* too narrow"):
        check_target(model, SizeTarget(avg_bits=3.5))  # inside, but no choice lands in [3.45, 3.5]


def test_a_layer_with_a_single_candidate_counts_in_the_floor():
    model = nn.Sequential(nn.Linear(16, 16, bias=False), nn.Linear(16, 16, bias=False))
    prepare(model, layer_bits={"0": [8], "1": [2, 4]})
    with pytest.raises(ValueError, match=r"floor 5, ceiling 6"):
        check_target(model, SizeTarget(avg_bits=4.0))


@pytest.mark.parametrize("target", [1.3, 2.0, 2.7, 3.5, 5.0, 7.5])
def test_fixing_by_allocation_deploys_the_target_within_five_hundredths(target):
    torch.manual_seed(0)
    model = toy_model(sizes=(8, 16, 24, 32, 40, 48))
    for _, s in quantized_layers(model):
        s.arch_logits.data.normal_()
    fix_to_allocation(model, SizeTarget(avg_bits=target))
    assert target - 0.05 <= storage_report(model).average_bits <= target


def test_fixing_by_allocation_deploys_a_size_budget_within_one_percent():
    model = toy_model(sizes=(8, 16, 24, 32, 40, 48))
    budget = 0.99 * storage_report(model).size_mb  # storage_report while searching: argmax bits (all 1-bit: zeros)
    budget = 0.5 * (storage_report(toy_model(sizes=(8, 16, 24, 32, 40, 48), candidates=(8,))).size_mb + budget)
    fix_to_allocation(model, SizeTarget(size_mb=budget))
    assert 0.99 * budget <= storage_report(model).size_mb <= budget


def test_argmax_allocation_ignores_the_target():
    model = toy_model()
    for _, s in quantized_layers(model):
        s.arch_logits.data = torch.tensor([0.0, 0.0, 0.0, 0.0, 5.0])
    bits = fix_to_allocation(model, SizeTarget(avg_bits=2.0), rule="argmax")
    assert set(bits.values()) == {8}


def test_search_summary_reports_expected_argmax_projected_bits_and_concentration():
    model = toy_model()
    for _, s in quantized_layers(model):
        s.arch_logits.data = torch.tensor([0.0, 0.0, 0.0, 0.0, 5.0])
    summary = search_summary(model, SizeTarget(avg_bits=3.0))
    assert summary["argmax_avg_bits"] == 8
    assert summary["expected_avg_bits"] == pytest.approx(float(expected_average_bits(model).detach()))
    assert 2.95 <= summary["projected_avg_bits"] <= 3.0
    assert summary["mean_max_prob"] == pytest.approx(np.exp(5) / (np.exp(5) + 4))


def test_the_size_penalty_moves_a_ten_times_larger_layer_faster_under_adam():
    """No task signal: only the size penalty drives the logits, through Adam with the model's LR groups."""
    model = nn.Sequential(nn.Linear(10, 10, bias=False), nn.Linear(10, 100, bias=False))  # 100 vs 1,000 weights
    prepare(model, candidate_bits=[2, 4, 8])
    scales = arch_lr_scales(model)
    assert scales == {"0": pytest.approx(100 / 550), "1": pytest.approx(1000 / 550)}  # n_l / mean n
    groups = [{"params": [s.arch_logits], "lr": 0.05 * scales[name]} for name, s in quantized_layers(model)]
    optimizer = torch.optim.Adam(groups)
    for _ in range(20):
        optimizer.zero_grad()
        torch.relu(expected_average_bits(model) / 2.5 - 1).backward()
        optimizer.step()
    small, large = (float(s.expected_bits()) for _, s in quantized_layers(model))
    start = (2 + 4 + 8) / 3
    assert start - large > 5 * (start - small) > 0


def test_a_learned_negative_one_bit_scale_packs_and_unpacks_to_the_trained_weight(tmp_path):
    model = nn.Sequential(nn.Linear(6, 4, bias=False))
    prepare(model, candidate_bits=[1])
    model.eval()
    trained = model[0].weight.detach().clone()  # initialises the scales
    supernet = next(s for _, s in quantized_layers(model))
    supernet.scales.data.neg_()  # a learned scale that crossed zero
    trained = model[0].weight.detach().clone()
    save_packed(model, tmp_path / "m.mpq")
    fresh = nn.Sequential(nn.Linear(6, 4, bias=False))
    prepare(fresh, candidate_bits=[1])
    load_packed(fresh, tmp_path / "m.mpq")
    fresh.eval()
    assert torch.equal(fresh[0].weight, trained)
    assert torch.equal(trained.sign(), model[0].parametrizations.weight.original.sign())


# ---- the supernet's state against checkpoint averaging (ESPnet's *.ave.pth) ----------------------

def averaged(*states):
    """ESPnet's average_nbest_models: integer tensors summed, the others averaged."""
    out = {}
    for key in states[0]:
        total = sum(s[key] for s in states[1:]) + states[0][key] if len(states) > 1 else states[0][key]
        out[key] = total if str(total.dtype).startswith("torch.int") else total / len(states)
    return out


def test_averaging_checkpoints_with_the_same_bits_keeps_those_bits():
    a, b = toy_model(), toy_model()
    for m in (a, b):
        fix_to_allocation(m, SizeTarget(avg_bits=3.0))
    fresh = toy_model()
    fresh.load_state_dict(averaged(a.state_dict(), a.state_dict(), a.state_dict()))
    assert {n: s.chosen_bits for n, s in quantized_layers(fresh)} == {n: s.chosen_bits for n, s in quantized_layers(a)}
    assert all(s.is_fixed and not s.arch_logits.requires_grad for _, s in quantized_layers(fresh))


def test_averaging_checkpoints_with_different_bits_is_refused_naming_the_layer():
    a, b = toy_model(), toy_model()
    for (_, s), k in zip(quantized_layers(a), (0, 1)):
        s.fix(k)
    for (_, s), k in zip(quantized_layers(b), (0, 4)):
        s.fix(k)
    with pytest.raises(CheckpointAverageError, match=r"layer '1': .* averages checkpoints with different "
                                                     r"bit-widths .* latest.pth"):
        toy_model().load_state_dict(averaged(a.state_dict(), b.state_dict()))


def test_a_legacy_summed_fixed_index_is_refused():
    state = toy_model().state_dict()
    for key in [k for k in state if k.endswith("fixed_onehot")]:
        del state[key]
        state[key.replace("fixed_onehot", "fixed_index")] = torch.tensor(7)  # 2 checkpoints summed
    with pytest.raises(CheckpointAverageError, match=r"fixed_index 7 is out of range .* latest.pth"):
        toy_model().load_state_dict(state)


def test_a_searching_checkpoint_loads_as_searching_with_its_temperature():
    model = toy_model()
    for _, s in quantized_layers(model):
        s.set_temperature(0.3)
    fresh = toy_model()
    fresh.load_state_dict(model.state_dict())
    assert all(not s.is_fixed and s._tau == pytest.approx(0.3) for _, s in quantized_layers(fresh))


def split_model(split: bool, arch_lr: float = 0.05) -> nn.Sequential:
    """Two searching layers of 100 and 1,000 weights, with the mpq model's optimizer groups."""
    from espnet_mpq.quantizers import build_config

    model = nn.Sequential(nn.Linear(10, 10, bias=False), nn.Linear(10, 100, bias=False))
    prepare(model, candidate_bits=[2, 4, 8], split_logits=split)
    model._searches = True
    model.quantizer = build_config("joint", {"candidate_bits": [2, 4, 8], "target_avg_bits": 3.0,
                                             "arch_lr": arch_lr, "split_logits": split})
    return model.train()


def test_split_logits_send_the_task_loss_to_the_task_part_and_the_penalty_to_the_size_part():
    model = split_model(split=True)
    model(torch.randn(3, 10)).square().sum().backward()  # a task loss, through the Gumbel-Softmax sample
    for _, s in quantized_layers(model):
        assert s.arch_logits.grad.abs().sum() > 0 and s.size_logits.grad is None
        s.arch_logits.grad = None
    expected_average_bits(model).backward()  # the size penalty's argument
    for _, s in quantized_layers(model):
        assert s.arch_logits.grad is None and s.size_logits.grad.abs().sum() > 0


def test_split_logits_groups_give_the_task_part_one_rate_and_the_size_part_a_size_scaled_one():
    from espnet_mpq.asr.model import ARCH_LR_KEY, MpqESPnetModel

    model = split_model(split=True, arch_lr=0.1)
    groups = MpqESPnetModel.optimizer_param_groups(model)
    rates = {id(p): (g["lr"], g[ARCH_LR_KEY], g["weight_decay"]) for g in groups[1:] for p in g["params"]}
    scales = arch_lr_scales(model)
    for name, s in quantized_layers(model):
        assert rates[id(s.arch_logits)] == (0.1, 0.1, 0.0)
        assert rates[id(s.size_logits)] == (pytest.approx(0.1 * scales[name]),) * 2 + (0.0,)
    assert not {id(p) for p in groups[0]["params"]} & set(rates)


@pytest.mark.parametrize("split", [False, True])
def test_logits_of_equal_rate_share_a_group_and_train_as_in_groups_of_their_own(split):
    """Three layers, two of one size: one group per distinct rate; Adam moves every logit as it
    would with one group per logit (the groups of espnet_mpq <= stop 13)."""
    import copy

    from espnet_mpq.asr.model import ARCH_LR_KEY, MpqESPnetModel
    from espnet_mpq.quantizers import build_config

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(10, 10, bias=False), nn.Linear(10, 10, bias=False), nn.Linear(10, 100, bias=False))
    prepare(model, candidate_bits=[2, 4, 8], split_logits=split)
    model._searches = True
    model.quantizer = build_config("joint", {"candidate_bits": [2, 4, 8], "target_avg_bits": 3.0,
                                             "arch_lr": 0.05, "split_logits": split})
    groups = MpqESPnetModel.optimizer_param_groups(model.train())
    assert len(groups) == 1 + (3 if split else 2)
    assert all(g["lr"] == g[ARCH_LR_KEY] and g["weight_decay"] == 0.0 for g in groups[1:])
    alone = copy.deepcopy(model)
    rates = {id(p): g["lr"] for g in groups[1:] for p in g["params"]}
    named = dict(model.named_parameters())
    own = [{"params": [p], "lr": rates[id(named[n])]} for n, p in alone.named_parameters() if id(named[n]) in rates]
    assert len(own) == (6 if split else 3)
    optimizers = [torch.optim.Adam(groups, foreach=True), torch.optim.Adam([{"params": [p for n, p in alone.named_parameters()
                                                                                     if id(named[n]) not in rates]}] + own)]
    for _ in range(5):
        for m, opt in zip((model, alone), optimizers):
            torch.manual_seed(1)
            opt.zero_grad()
            (m(torch.randn(3, 10)).square().mean() + expected_average_bits(m)).backward()
            opt.step()
    for (name, p), q in zip(model.named_parameters(), alone.parameters()):
        torch.testing.assert_close(p, q, msg=name)


@pytest.mark.parametrize("split", [False, True])
def test_the_task_signal_moves_a_small_layer_as_fast_as_a_large_one_only_with_split_logits(split):
    """A task loss that favours more bits, through Adam with the model's groups: without the split
    the small layer's logits learn at a tenth of the rate; with it both learn at arch_lr."""
    from espnet_mpq.asr.model import MpqESPnetModel

    torch.manual_seed(0)
    model = split_model(split)
    optimizer = torch.optim.Adam(MpqESPnetModel.optimizer_param_groups(model))
    for _ in range(20):
        optimizer.zero_grad()
        sum(-(s.mixture_weights() * s.bits).sum() for _, s in quantized_layers(model)).backward()
        optimizer.step()
    small, large = (float(s.expected_bits()) - 14 / 3 for _, s in quantized_layers(model))
    assert large > 0.5
    assert (small > 0.5 * large) if split else (0 < small < 0.2 * large)


def test_a_checkpoint_without_size_logits_loads_with_them_zero():
    model = split_model(split=True)
    state = {k: v for k, v in model.state_dict().items() if not k.endswith("size_logits")}
    for _, s in quantized_layers(model):
        s.size_logits.data.fill_(3.0)
    model.load_state_dict(state)
    assert all(bool((s.size_logits == 0).all()) for _, s in quantized_layers(model))
