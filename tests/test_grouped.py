"""Specification of the grouped quantizer (espnet_mpq.core.grouped) and its step hook (transform.GroupedStep)."""
import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from espnet_mpq.core import grouped, transform
from espnet_mpq.core.fused import fused_mix_fake_quantize
from espnet_mpq.core.grouped import grouped_mix_fake_quantize
from espnet_mpq.core.primitives import init_scale
from espnet_mpq.core.transform import fix_bit_widths, prepare, quantized_layers, strip
from espnet_mpq.quantizers import build_config
from espnet_mpq.core import triton_kernel
from test_fused import HostToDevice, use_triton_interpreter

SHAPES = [(12, 20), (6, 4, 3), (5, 7)]  # Linear, Conv1d, Linear


def inputs(bits, seed=0):
    """Weights, scales (n, C_l) clipping part of every channel (one negative), g (L, n), dOut per weight."""
    torch.manual_seed(seed)
    weights = [torch.randn(s) for s in SHAPES]
    scales = [torch.stack([init_scale(w, b, "max") * 0.7 for b in bits]) for w in weights]
    scales[0][0, 0] = -scales[0][0, 0]
    mixture = torch.softmax(torch.randn(len(SHAPES), len(bits)), dim=1)
    return weights, scales, mixture, [torch.randn(s) for s in SHAPES]


def values_and_grads(fn, weights, scales, mixture, grad_outs):
    weights = [w.clone().requires_grad_() for w in weights]
    scales = [s.clone().requires_grad_() for s in scales]
    mixture = mixture.clone().requires_grad_()
    outs = fn(weights, scales, mixture)
    sum((o * d).sum() for o, d in zip(outs, grad_outs)).backward()
    return {"W_eff": [o.detach() for o in outs], "dW": [w.grad for w in weights],
            "ds": [s.grad for s in scales], "dg": [mixture.grad]}


def per_layer(weights, scales, mixture, bits):
    return [fused_mix_fake_quantize(w, s, mixture[l], bits, dead_threshold=0.0)
            for l, (w, s) in enumerate(zip(weights, scales))]


@pytest.mark.parametrize("block", ["whole", "small", "below_a_channel"])
@pytest.mark.parametrize("bits", [(4,), (1,), (2, 4, 8), (1, 2, 3, 4, 8)], ids=str)
def test_values_and_every_gradient_equal_the_per_layer_op(bits, block, monkeypatch):
    # small: blocks of at most 50 elements of whole channels, starting inside weights;
    # below_a_channel: room for 10 elements, so each channel (7 to 20 elements) is a block alone
    room = {"whole": None, "small": 50, "below_a_channel": 10}[block]
    if room is not None:
        monkeypatch.setattr(grouped, "GROUPED_BLOCK_ELEMENTS", room * len(bits))
        plan = grouped._block_plan(grouped._layout([torch.empty(s) for s in SHAPES]), len(bits))
        assert len(plan) > len(SHAPES) and all(b - a <= room or len(p) == 1 for a, b, p in plan)
    data = inputs(bits)
    ref = values_and_grads(lambda *a: per_layer(*a, bits), *data)
    got = values_and_grads(lambda *a: grouped_mix_fake_quantize(*a, bits), *data)
    for name in ref:
        for r, g in zip(ref[name], got[name]):
            assert r.abs().sum() > 0, name  # the check can fail: every gradient is non-zero
            torch.testing.assert_close(g, r, rtol=1e-5, atol=1e-6, msg=name)


def test_an_output_the_loss_does_not_use_gets_zero_gradients():
    bits = (2, 4)
    weights, scales, mixture, _ = inputs(bits)
    weights = [w.requires_grad_() for w in weights]
    grouped_mix_fake_quantize(weights, scales, mixture, bits)[0].sum().backward()
    assert weights[0].grad.abs().sum() > 0
    assert all(w.grad is not None and not w.grad.any() for w in weights[1:])


def test_mismatched_scales_or_mixture_are_rejected_with_the_shapes():
    weights, scales, mixture, _ = inputs((2, 4))
    with pytest.raises(ValueError, match=r"weight 1: scales \(2, 7\) for weight \(6, 4, 3\)"):
        grouped_mix_fake_quantize(weights, [scales[0], torch.ones(2, 7), scales[2]], mixture, (2, 4))
    with pytest.raises(ValueError, match=r"mixture \(2, 2\)"):
        grouped_mix_fake_quantize(weights, scales, mixture[:2], (2, 4))


@pytest.mark.parametrize("bits", [(4,), (1, 2, 3, 4, 8)], ids=str)
def test_a_step_on_a_device_brings_nothing_from_host_memory(bits, monkeypatch):
    """As the per-layer op (test_fused): after the first step (which builds the layout and the
    constants once per device) no host data is copied to the device, and there is no index list."""
    weights, scales, mixture, grad_outs = inputs(bits)
    weights, scales = [w.to("meta").requires_grad_() for w in weights], [s.to("meta") for s in scales]
    mixture, grad_outs = mixture.to("meta"), [d.to("meta") for d in grad_outs]

    def step():
        outs = grouped_mix_fake_quantize(weights, scales, mixture, bits)
        torch.autograd.backward(outs, grad_outs)

    step()
    with HostToDevice(monkeypatch) as mode:
        step()
    assert mode.ops == []
    assert all(w.grad is not None and w.grad.shape == w.shape for w in weights)


# ---- the step hook -----------------------------------------------------------------------------

def small_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 3))


def deterministic_gumbel(monkeypatch):
    """g = softmax(lambda / tau): the same g from one (L, n) draw and from L draws of (n,)."""
    monkeypatch.setattr(F, "gumbel_softmax", lambda logits, tau=1.0, hard=False, dim=-1: torch.softmax(logits / tau, dim))


def count_grouped_calls(monkeypatch) -> list:
    calls = []
    op = transform.grouped_mix_fake_quantize
    monkeypatch.setattr(transform, "grouped_mix_fake_quantize", lambda *a: calls.append(a[3]) or op(*a))
    return calls


def step_grads(model, x):
    model.zero_grad()
    model(x).pow(2).sum().backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


LAYER_BITS = {"0": [4], "2": [1, 2, 4, 8], "4": [2]}  # fixed at 4, searching, fixed at 2


def both_ways(fix: bool = False, **options) -> tuple[nn.Module, dict, dict]:
    """(the grouped model, its gradients of one training step, the layer-by-layer gradients):
    the same small model and random logits, prepared with ``options``."""
    x = torch.randn(5, 8)
    grads = {}
    for grouped_step in (False, True):
        model = small_model()
        prepare(model, grouped=grouped_step, **options)
        torch.manual_seed(1)
        for _, s in quantized_layers(model):
            s.arch_logits.data.normal_()
        if fix:
            fix_bit_widths(model)
        grads[grouped_step] = step_grads(model, x)
    assert grads[True].keys() == grads[False].keys()
    return model, grads[True], grads[False]


@pytest.mark.parametrize("plan", ["searching", "mixed", "fixed"])
def test_a_training_step_gives_the_per_layer_gradients_in_one_call_per_candidate_set(plan, monkeypatch):
    deterministic_gumbel(monkeypatch)
    calls = count_grouped_calls(monkeypatch)
    options = {"layer_bits": LAYER_BITS} if plan == "mixed" else {"candidate_bits": [1, 2, 4, 8]}
    model, grouped_grads, layer_grads = both_ways(fix=plan == "fixed", **options)
    candidate_sets = {s.candidate_bits if not s.is_fixed else (s.chosen_bits,) for _, s in quantized_layers(model)}
    assert sorted(calls) == sorted(candidate_sets)  # one call per candidate set, none without grouping
    assert any(k.endswith("arch_logits") for k in grouped_grads) == (plan != "fixed")
    for name in layer_grads:
        torch.testing.assert_close(grouped_grads[name], layer_grads[name], rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.parametrize("plan", ["searching", "mixed", "fixed"])
def test_with_the_triton_kernel_one_draw_feeds_one_launch_per_layer(plan, monkeypatch):
    """ESPNET_MPQ_TRITON=1: the hook draws g once per candidate set and launches the kernel once per
    layer with its row (no grouped call); the gradients are the default layer-by-layer ones."""
    deterministic_gumbel(monkeypatch)
    options = {"layer_bits": LAYER_BITS} if plan == "mixed" else {"candidate_bits": [1, 2, 4, 8]}
    torch.manual_seed(2)  # the same input x in both calls
    _, _, layer_grads = both_ways(fix=plan == "fixed", **options)  # the kernel off: the reference
    use_triton_interpreter(monkeypatch)
    calls = count_grouped_calls(monkeypatch)
    draws = []
    monkeypatch.setattr(F, "gumbel_softmax", lambda logits, tau=1.0, hard=False, dim=-1:
                        draws.append(logits.shape) or torch.softmax(logits / tau, dim))
    launched = triton_kernel.forward_calls
    torch.manual_seed(2)
    model, grouped_grads, per_layer_triton = both_ways(fix=plan == "fixed", **options)
    assert calls == []
    assert triton_kernel.forward_calls - launched == 2 * 3  # 3 layers, layer by layer then grouped
    searching = plan != "fixed"
    # Layer by layer: a draw of (n,) per searching layer; grouped: one (L, n) draw per candidate set.
    assert [d for d in draws if len(d) == 2] == ([torch.Size([1 if plan == "mixed" else 3, 4])] if searching else [])
    for name in layer_grads:
        torch.testing.assert_close(grouped_grads[name], layer_grads[name], rtol=1e-5, atol=1e-6, msg=name)
        torch.testing.assert_close(per_layer_triton[name], layer_grads[name], rtol=1e-5, atol=1e-6, msg=name)


def test_calls_are_cut_into_runs_of_layers_within_the_block_size(monkeypatch):
    """A call keeps at most one block of temporaries and of waiting gradients: layers of 128,
    192 and 36 weights over 3 candidates, with room for 3 x 200 per call, take one call each
    (the same gradients as layer by layer)."""
    assert transform._chunks([5, 5, 5, 20, 5], 10) == [slice(0, 2), slice(2, 3), slice(3, 4), slice(4, 5)]
    assert transform._chunks([3], 1) == [slice(0, 1)]
    deterministic_gumbel(monkeypatch)
    calls = count_grouped_calls(monkeypatch)
    monkeypatch.setattr(grouped, "GROUPED_BLOCK_ELEMENTS", 3 * 200)
    _, grouped_grads, layer_grads = both_ways(candidate_bits=[1, 2, 4])
    assert calls == [(1, 2, 4)] * 3
    for name in layer_grads:
        torch.testing.assert_close(grouped_grads[name], layer_grads[name], rtol=1e-5, atol=1e-6, msg=name)


def test_by_default_and_in_evaluation_layers_are_quantized_one_by_one(monkeypatch):
    calls = count_grouped_calls(monkeypatch)
    model = small_model()
    prepare(model, candidate_bits=[2, 4, 8])  # grouped=False
    model(torch.randn(2, 8))
    forced = small_model()
    prepare(forced, candidate_bits=[2, 4, 8], grouped=True)
    forced.eval()(torch.randn(2, 8))
    assert calls == []
    forced.train()(torch.randn(2, 8))
    assert calls == [(2, 4, 8)]


def test_the_step_weights_are_dropped_after_the_forward_even_when_it_raises():
    model = small_model()
    prepare(model, candidate_bits=[2, 4, 8], grouped=True)
    model(torch.randn(2, 8))
    with pytest.raises(RuntimeError):
        model(torch.randn(2, 7))  # wrong input size: the first matmul fails
    assert all(s._step_weight is None for _, s in quantized_layers(model))


def test_a_deep_copy_quantizes_its_own_layers(monkeypatch):
    calls = count_grouped_calls(monkeypatch)
    model = small_model()
    prepare(model, candidate_bits=[2, 4, 8], grouped=True)
    twin = copy.deepcopy(model)
    twin(torch.randn(2, 8)).sum().backward()
    assert len(calls) == 1
    assert all(p.grad is not None for n, p in twin.named_parameters() if n.endswith("original"))
    assert all(p.grad is None for p in model.parameters())


def test_a_stripped_model_trains_without_the_grouped_call(monkeypatch):
    calls = count_grouped_calls(monkeypatch)
    model = small_model()
    prepare(model, candidate_bits=[2, 4, 8], grouped=True)
    strip(model)
    model.train()(torch.randn(2, 8)).sum().backward()
    assert calls == [] and model[0].weight.grad is not None


def test_grouped_and_compile_exclude_each_other():
    with pytest.raises(ValueError, match="grouped=True and compile=True"):
        prepare(small_model(), candidate_bits=[2, 4], compile=True, grouped=True)
    with pytest.raises(ValueError, match="quantizer_conf grouped=True"):
        build_config("uniform", {"bits": 4, "compile": True, "grouped": True})
    assert build_config("uniform", {"bits": 4}).grouped is False
    with pytest.raises(ValueError, match="grouped='yes'"):
        build_config("uniform", {"bits": 4, "grouped": "yes"})


@pytest.mark.parametrize("modules", [["transformer"], ["transformer", "feature_extractor", "pos_conv"]])
def test_the_s3prl_frontend_trains_the_same_grouped_as_layer_by_layer(tiny_hubert_ckpt, wavs, modules, monkeypatch):
    """Through ESPnet's frontend (s3prl hubert_local, fused attention reading q_proj.weight): one
    grouped call for the whole upstream gives the layer-by-layer gradients."""
    from espnet_mpq.asr.frontend import S3prlMpqFrontend

    deterministic_gumbel(monkeypatch)
    calls = count_grouped_calls(monkeypatch)
    grads = {}
    for grouped_step in (False, True):
        torch.manual_seed(0)
        conf = {"candidate_bits": [1, 2, 4, 8], "target_avg_bits": 3.0, "modules": modules, "grouped": grouped_step}
        frontend = S3prlMpqFrontend(upstream="hubert_local", path_or_url=tiny_hubert_ckpt, multilayer_feature=True,
                                    quantizer="joint", quantizer_conf=conf)
        for _, s in quantized_layers(frontend):
            s.arch_logits.data.normal_()
        frontend.train()
        feats, _ = frontend(*wavs)
        feats.pow(2).mean().backward()
        grads[grouped_step] = {n: p.grad for n, p in frontend.named_parameters() if p.grad is not None}
    assert calls == [(1, 2, 4, 8)]
    assert grads[True].keys() == grads[False].keys()
    assert sum(k.endswith("original") for k in grads[True]) == len(list(quantized_layers(frontend)))
    for name in grads[False]:
        torch.testing.assert_close(grads[True][name], grads[False][name], rtol=1e-4, atol=1e-6, msg=name)
