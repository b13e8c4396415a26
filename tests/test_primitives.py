"""Specification of the quantization math (espnet_mpq.core.primitives)."""
import pytest
import torch

from espnet_mpq.core.primitives import (
    dequantize,
    fake_quantize,
    init_scale,
    mix_fake_quantize,
    qmax,
    quantize_to_codes,
)


@pytest.fixture
def weight():
    torch.manual_seed(0)
    return torch.randn(16, 40)


def test_qmax_gives_symmetric_grids():
    assert [qmax(b) for b in range(1, 9)] == [1, 1, 3, 7, 15, 31, 63, 127]


@pytest.mark.parametrize("bad", [0, 9, -1, 2.5, True, "4"])
def test_bits_outside_1_to_8_are_rejected_with_the_value(bad):
    with pytest.raises(ValueError, match=r"bit-width .* not allowed.*1 to 8"):
        qmax(bad)


def test_quantization_error_falls_as_bits_grow(weight):
    errors = [
        (fake_quantize(weight, init_scale(weight, b), b) - weight).pow(2).mean().item() for b in range(1, 9)
    ]
    assert all(a > b for a, b in zip(errors, errors[1:])), errors


@pytest.mark.parametrize("bits", range(1, 9))
def test_values_lie_on_the_per_channel_grid(weight, bits):
    scale = init_scale(weight, bits)
    levels = fake_quantize(weight, scale, bits) / scale[:, None]
    assert torch.allclose(levels, levels.round(), atol=1e-4)
    assert levels.abs().max() <= qmax(bits) + 1e-4
    if bits == 1:
        assert set(levels.round().unique().tolist()) <= {-1.0, 1.0}
    if bits == 2:
        assert set(levels.round().unique().tolist()) <= {-1.0, 0.0, 1.0}


@pytest.mark.parametrize("bits", [1, 2, 3, 4, 8])
def test_fake_quantize_equals_dequantized_codes_exactly(weight, bits):
    scale = init_scale(weight, bits)
    assert torch.equal(fake_quantize(weight, scale, bits), dequantize(quantize_to_codes(weight, scale, bits), scale))


@pytest.mark.parametrize("bits", [1, 3, 8])
def test_gradients_reach_the_weight_and_the_scales(weight, bits):
    w = weight.clone().requires_grad_()
    s = init_scale(weight, bits).requires_grad_()
    (fake_quantize(w, s, bits) * torch.randn_like(w)).sum().backward()
    assert w.grad is not None and w.grad.abs().sum() > 0
    assert s.grad is not None and s.grad.abs().sum() > 0


def test_weight_gradient_is_straight_through_inside_the_clip_range_and_zero_outside():
    w = torch.tensor([[0.1, 0.26, 5.0, -5.0]], requires_grad=True)
    fake_quantize(w, torch.tensor([0.1]), 3).sum().backward()  # q = 3: range |W| <= 0.3
    assert w.grad.tolist() == [[1.0, 1.0, 0.0, 0.0]]


def test_mse_scale_initialisation_is_no_worse_than_max(weight):
    for bits in (2, 3, 4):
        err = {m: (fake_quantize(weight, init_scale(weight, bits, m), bits) - weight).pow(2).sum() for m in ("max", "mse")}
        assert err["mse"] <= err["max"]


def test_unknown_scale_initialisation_is_rejected(weight):
    with pytest.raises(ValueError, match="'median' is not allowed"):
        init_scale(weight, 4, "median")


def test_one_hot_mixture_equals_the_single_quantizer(weight):
    scales = torch.stack([init_scale(weight, b) for b in (2, 4, 8)])
    one_hot = torch.tensor([0.0, 1.0, 0.0])
    assert torch.equal(mix_fake_quantize(weight, scales, one_hot, (2, 4, 8)), fake_quantize(weight, scales[1], 4))
