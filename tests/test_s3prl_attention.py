"""Specification: quantizing s3prl's HuBERT transformer really changes what the model computes.

s3prl's MultiheadAttention reads ``q_proj.weight`` (and k/v/out_proj) directly in a
fused ``F.multi_head_attention_forward`` call, so a quantizer that only swapped the
Linear modules' forward would leave attention at 32 bits. The parametrization must
act on every read of ``.weight``.
"""
import pytest
import torch

from espnet_mpq.core.packed_file import load_packed, save_packed
from espnet_mpq.core.transform import name_filter, prepare, quantized_layers

TRANSFORMER_LINEARS = r"encoder\.layers\.\d+\.(self_attn\.(q_proj|k_proj|v_proj|out_proj)|fc1|fc2)$"
ATTENTION_PROJECTIONS = r"encoder\.layers\.\d+\.self_attn\.(q_proj|k_proj|v_proj|out_proj)$"


@pytest.fixture(scope="module")
def load_upstream(tiny_hubert_ckpt):
    """Loads s3prl's S3PRLUpstream('hubert_local') around the same random tiny HubertModel, in eval mode.

    A fresh load per model: s3prl collects hidden states through hooks bound to the
    instance, so a deepcopy of an upstream does not forward.
    """
    from s3prl.nn import S3PRLUpstream

    return lambda: S3PRLUpstream("hubert_local", path_or_url=tiny_hubert_ckpt).eval()


def last_hidden(upstream, wavs) -> torch.Tensor:
    """Last hidden state (B, T, D) of the upstream."""
    with torch.no_grad():
        hidden_states, _ = upstream(*wavs)
    return hidden_states[-1]


def quantized(load_upstream, pattern: str, bits: int):
    """The upstream with the layers matching ``pattern`` fixed at ``bits``."""
    model = load_upstream()
    names = prepare(model, candidate_bits=[bits], filter_fn=name_filter([pattern]))
    assert names, f"no layer matched {pattern}"
    return model.eval()


def test_the_transformer_linears_of_a_tiny_hubert_are_all_selected(load_upstream):
    model = quantized(load_upstream, TRANSFORMER_LINEARS, 8)
    layers = [name.split("encoder.layers.")[1] for name, _ in quantized_layers(model)]
    expected = [f"{i}.{m}" for i in range(2)
                for m in ("self_attn.k_proj", "self_attn.v_proj", "self_attn.q_proj", "self_attn.out_proj",
                          "fc1", "fc2")]
    assert sorted(layers) == sorted(expected)


def test_output_error_grows_as_bits_drop(load_upstream, wavs):
    reference = last_hidden(load_upstream(), wavs)
    error = {
        bits: (last_hidden(quantized(load_upstream, TRANSFORMER_LINEARS, bits), wavs) - reference).abs().max()
        for bits in (2, 8)
    }
    assert 0 < error[8] < error[2]


def test_quantized_output_equals_the_float_model_with_dequantized_weights(load_upstream, wavs, tmp_path):
    fake_quantized = quantized(load_upstream, TRANSFORMER_LINEARS, 2)
    save_packed(fake_quantized, tmp_path / "upstream.mpq")
    dequantized = load_upstream()
    load_packed(dequantized, tmp_path / "upstream.mpq")  # plain Linear weights <- s * codes
    assert not list(quantized_layers(dequantized))
    # Equal up to float rounding inside torch's fused attention (about 1e-6 on outputs of size ~1;
    # the 2-bit quantization error is about 1).
    torch.testing.assert_close(last_hidden(fake_quantized, wavs), last_hidden(dequantized, wavs), atol=1e-5, rtol=0)


def test_quantizing_only_the_attention_projections_changes_the_output(load_upstream, wavs):
    reference = last_hidden(load_upstream(), wavs)
    for bits in (1, 2):
        output = last_hidden(quantized(load_upstream, ATTENTION_PROJECTIONS, bits), wavs)
        assert not torch.allclose(output, reference, atol=1e-3), f"{bits}-bit attention left the output as is"
