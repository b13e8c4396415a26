"""Specification of the supernet parametrization and model transforms."""
import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from espnet_mpq.core.primitives import fake_quantize
from espnet_mpq.core.supernet import MixedPrecisionWeight
from espnet_mpq.core.transform import (
    bit_widths,
    expected_average_bits,
    expected_total_bits,
    fix_bit_widths,
    name_filter,
    prepare,
    quantized_layers,
    set_temperature,
    strip,
)


def tiny_model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(12, 10), nn.ReLU(), nn.Linear(10, 6), nn.Conv1d(6, 4, 3))


def run(model, seed=1):
    torch.manual_seed(seed)
    h = model[:3](torch.randn(5, 12))
    return model[3](h.t().unsqueeze(0))


@pytest.mark.parametrize(
    "bits, message",
    [([], "empty"), ([4, 2], "strictly increasing"), ([2, 2, 4], "strictly increasing"), ([2, 9], "bit-width 9")],
)
def test_bad_candidate_lists_fail_at_construction_naming_the_value(bits, message):
    with pytest.raises(ValueError, match=message):
        MixedPrecisionWeight(torch.zeros(3, 3), bits)


def test_non_positive_temperature_is_rejected():
    s = MixedPrecisionWeight(torch.zeros(3, 3), [2, 4])
    with pytest.raises(ValueError, match="temperature 0.0 is not allowed"):
        s.set_temperature(0.0)


def test_one_hot_supernet_equals_fixed_quantizer_of_that_bit_width():
    w = torch.randn(8, 5)
    s = MixedPrecisionWeight(w, [2, 4, 8]).train()
    s.initialize_scales(w)
    s.mixture_weights = lambda: torch.tensor([0.0, 0.0, 1.0])  # a Gumbel sample that came out one-hot
    assert torch.equal(s(w), fake_quantize(w, s.scales[2], 8))


def test_training_forward_mixes_candidates_with_one_effective_weight():
    w = torch.randn(8, 5)
    s = MixedPrecisionWeight(w, [2, 8]).train()
    out = s(w)
    assert out.shape == w.shape
    q2, q8 = (fake_quantize(w, s.scales[i], b) for i, b in enumerate((2, 8)))
    # W_eff lies on the segment between the two candidates, elementwise.
    assert torch.all((out - torch.minimum(q2, q8) >= -1e-6) & (torch.maximum(q2, q8) - out >= -1e-6))


def test_prepare_quantizes_linear_and_conv1d_layers_selected_by_name():
    model = tiny_model()
    assert prepare(model, candidate_bits=[2, 4], filter_fn=name_filter([r"^[23]$"])) == ["2", "3"]
    assert [n for n, _ in quantized_layers(model)] == ["2", "3"]


def test_quantized_model_output_changes_when_bits_drop():
    model = tiny_model()
    reference = run(model).detach()
    prepare(model, candidate_bits=[2, 8])
    model.eval()
    outs = {}
    for k in (0, 1):
        for _, s in quantized_layers(model):
            s.fix(k)
        outs[k] = run(model).detach()
    err2, err8 = ((outs[k] - reference).abs().max() for k in (0, 1))
    assert err8 < err2


def test_size_penalty_gradient_lowers_expected_bits():
    model = tiny_model()
    prepare(model, candidate_bits=[2, 4, 8])
    before = expected_average_bits(model).item()
    opt = torch.optim.SGD([s.arch_logits for _, s in quantized_layers(model)], lr=1.0)
    for _ in range(5):
        opt.zero_grad()
        torch.relu(expected_average_bits(model) / 3.0 - 1).backward()
        opt.step()
    assert expected_average_bits(model).item() < before


def test_expected_average_bits_is_weighted_by_parameter_count():
    model = tiny_model()
    prepare(model, candidate_bits=[2, 8])
    layers = dict(quantized_layers(model))
    layers["0"].fix(1)  # 120 weights at 8 bits
    for name in ("2", "3"):  # 60 + 72 weights at 2 bits
        layers[name].fix(0)
    assert expected_average_bits(model).item() == pytest.approx((120 * 8 + 132 * 2) / 252)


@pytest.mark.parametrize("split", [False, True])
def test_expected_total_bits_has_the_values_and_gradients_of_the_layer_by_layer_sum(split):
    """One softmax per candidate set: searching layers of two sets, a fixed layer, random logits."""
    torch.manual_seed(0)
    model = tiny_model()
    prepare(model, layer_bits={"0": [2, 4, 8], "2": [1, 2, 3, 4, 8], "3": [2, 4, 8]}, split_logits=split)
    layers = dict(quantized_layers(model))
    for s in layers.values():
        s.arch_logits.data.normal_()
        s.size_logits.data.normal_()
    layers["3"].fix(2)
    counts = {"0": 120, "2": 60, "3": 72}
    reference = sum(counts[n] * s.expected_bits() for n, s in layers.items())
    reference.backward()
    grads = {n: (s.arch_logits.grad, s.size_logits.grad) for n, s in layers.items()}
    for s in layers.values():
        s.arch_logits.grad = s.size_logits.grad = None
    total = expected_total_bits(list(layers.values()))
    total.backward()
    assert total.item() == pytest.approx(reference.item(), rel=1e-6)
    for name, s in layers.items():
        for got, want in zip((s.arch_logits.grad, s.size_logits.grad), grads[name]):
            assert (got is None) == (want is None)
            if want is not None:
                torch.testing.assert_close(got, want)
    assert grads["0"][1 if split else 0].abs().sum() > 0 and grads["3"] == (None, None)


def test_set_temperature_touches_no_buffer_and_the_saved_state_holds_it():
    """No device operator per layer and step: the tau buffer is written when the state is saved."""
    model = tiny_model()
    prepare(model, candidate_bits=[2, 4, 8])
    set_temperature(model, 0.37)
    supernet = dict(quantized_layers(model))["2"]
    assert float(supernet.tau) == 1.0 and supernet._tau == pytest.approx(0.37)
    assert float(model.state_dict()["2.parametrizations.weight.0.tau"]) == pytest.approx(0.37)


def test_fixing_freezes_logits_and_removes_the_noise():
    model = tiny_model()
    prepare(model, candidate_bits=[2, 4, 8])
    model.train()
    bits = fix_bit_widths(model)
    assert bits == bit_widths(model)
    assert all(not s.arch_logits.requires_grad for _, s in quantized_layers(model))
    assert torch.equal(run(model), run(model))


def test_uniform_precision_is_a_single_candidate_fixed_from_the_start():
    model = tiny_model()
    prepare(model, candidate_bits=[4])
    assert set(bit_widths(model).values()) == {4}
    assert all(s.is_fixed for _, s in quantized_layers(model))


def test_layer_bits_must_name_quantizable_layers():
    with pytest.raises(ValueError, match=r"not nn.Linear/nn.Conv1d.*'1'"):
        prepare(tiny_model(), layer_bits={"0": [4], "1": [2]})


def test_float_checkpoint_loads_into_the_latent_weights():
    float_model = tiny_model(seed=3)
    model = tiny_model(seed=0)
    prepare(model, candidate_bits=[8])
    model.load_state_dict(float_model.state_dict(), strict=False)
    assert torch.equal(model[0].parametrizations.weight.original, float_model[0].weight)


def test_search_state_round_trips_through_a_state_dict():
    model = tiny_model()
    prepare(model, candidate_bits=[2, 4, 8])
    set_temperature(model, 0.37)
    run(model.train())
    first = dict(quantized_layers(model))["0"]
    first.fix(1)
    restored = tiny_model(seed=5)
    prepare(restored, candidate_bits=[2, 4, 8])
    restored.load_state_dict(model.state_dict())
    r = dict(quantized_layers(restored))
    assert r["0"].is_fixed and r["0"].chosen_bits == 4 and not r["0"].arch_logits.requires_grad
    assert not r["2"].is_fixed and r["2"].arch_logits.requires_grad
    assert float(r["2"].tau) == pytest.approx(0.37)
    assert torch.equal(r["2"].scales, dict(quantized_layers(model))["2"].scales)


def test_strip_leaves_plain_layers_holding_the_quantized_weights():
    model = tiny_model()
    prepare(model, candidate_bits=[3])
    expected = run(model.eval()).detach()
    strip(model)
    assert not list(quantized_layers(model))
    assert torch.equal(run(model), expected)


def test_compiled_mixture_gives_the_same_values_and_gradients():
    model = tiny_model()
    twin = tiny_model()
    prepare(model, candidate_bits=[1, 2, 4])
    prepare(twin, candidate_bits=[1, 2, 4], compile=True)
    twin.load_state_dict(model.state_dict())
    torch.manual_seed(7)
    a = run(model.train(), seed=2)
    torch.manual_seed(7)
    b = run(twin.train(), seed=2)
    torch.testing.assert_close(a, b)
    a.sum().backward()
    b.sum().backward()
    for (_, sa), (_, sb) in zip(quantized_layers(model), quantized_layers(twin)):
        torch.testing.assert_close(sa.scales.grad, sb.scales.grad, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(sa.arch_logits.grad, sb.arch_logits.grad, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("fixed", [False, True])
def test_a_training_forward_reads_no_buffer_back_to_the_host(fixed):
    """Mode, temperature and 'scales set' are read from Python mirrors: buffers moved to the meta
    device (where any int()/bool()/float() raises) do not disturb a training step."""
    layer = nn.Linear(8, 4)
    parametrize.register_parametrization(layer, "weight", MixedPrecisionWeight(layer.weight, [2, 4, 8]), unsafe=True)
    supernet = layer.parametrizations.weight[0]
    layer(torch.randn(2, 8))  # initialises the scales
    if fixed:
        supernet.fix(1)
    for name in ("fixed_onehot", "tau", "scales_initialized"):
        setattr(supernet, name, torch.empty_like(getattr(supernet, name), device="meta"))
    layer.train()
    layer(torch.randn(2, 8)).sum().backward()
    assert layer.parametrizations.weight.original.grad is not None


@pytest.mark.parametrize("fixed", [False, True])
def test_a_training_step_on_a_device_brings_nothing_from_host_memory(fixed, monkeypatch):
    """The supernet's training step (Gumbel-Softmax sample, fused quantizer, backward) on a non-CPU
    device (meta stands for a GPU) copies no host data there, after a first step there (which
    builds the per-device constants once)."""
    from test_fused import HostToDevice

    layer = nn.Linear(8, 4)
    parametrize.register_parametrization(layer, "weight", MixedPrecisionWeight(layer.weight, [2, 4, 8]), unsafe=True)
    layer(torch.randn(2, 8))  # initialises the scales
    if fixed:
        layer.parametrizations.weight[0].fix(1)
    layer.to("meta").train()
    layer(torch.randn(2, 8, device="meta")).sum().backward()
    with HostToDevice(monkeypatch) as mode:
        layer(torch.randn(2, 8, device="meta")).sum().backward()
    assert mode.ops == []
    assert layer.parametrizations.weight.original.grad is not None


def test_the_supernet_shows_its_candidates_and_mode():
    s = MixedPrecisionWeight(torch.empty(4, 8), [2, 4, 8])
    assert "candidate_bits=[2, 4, 8], searching" in repr(s)
    s.fix(1)
    assert "fixed=4" in repr(s)
