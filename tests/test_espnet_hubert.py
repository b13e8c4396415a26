"""Specification: the quantizer covers the upstream family ESPnet's HuBERT pre-training produces.

``python -m espnet2.bin.hubert_train`` with encoder ``torchaudio_hubert`` writes a
torchaudio HuBERT, which s3prl's ``espnet_hubert_local`` upstream loads. Its layer names
differ from s3prl's fairseq-style models (``transformer.layers.N.attention.q_proj``,
``feed_forward.intermediate_dense``, ``feature_projection.projection``,
``pos_conv_embed.conv`` with torch's parametrized weight norm), and its attention
calls q/k/v/out_proj before torch's scaled_dot_product_attention: the quantized
weights must reach every one of them.
"""
import pytest
import torch

from espnet_mpq.core.packed_file import load_packed, save_packed
from espnet_mpq.core.transform import prepare, quantized_layers
from espnet_mpq.quantizers import ALL_GROUPS, DOWNSTREAM, MODULE_GROUPS, select_layers
from test_s3prl_attention import last_hidden

pytestmark = pytest.mark.filterwarnings("ignore")

NUM_LAYERS, NUM_CONV = 2, 7  # the tiny preset
UPSTREAM_GROUPS = [g for g in ALL_GROUPS if g != DOWNSTREAM]
PREFIX = "upstream.model.wav2vec2."
EXPECTED = {
    "feature_extractor": [f"feature_extractor.conv_layers.{i}.conv" for i in range(NUM_CONV)],
    "pos_conv": ["encoder.transformer.pos_conv_embed.conv"],
    "transformer": ["encoder.feature_projection.projection"] + [
        f"encoder.transformer.layers.{i}.{m}" for i in range(NUM_LAYERS)
        for m in ("attention.q_proj", "attention.k_proj", "attention.v_proj", "attention.out_proj",
                  "feed_forward.intermediate_dense", "feed_forward.output_dense")
    ],
}


@pytest.fixture(scope="module")
def load_upstream(tiny_espnet_hubert_ckpt):
    """Loads s3prl's S3PRLUpstream('espnet_hubert_local') around the same tiny random model, in eval mode."""
    from s3prl.nn import S3PRLUpstream

    return lambda: S3PRLUpstream("espnet_hubert_local", path_or_url=tiny_espnet_hubert_ckpt).eval()


def quantized(load_upstream, groups: list[str], bits: int, only: str = ""):
    """The upstream with the layers of ``groups`` (names containing ``only``) fixed at ``bits``."""
    model = load_upstream()
    names = [n for n in select_layers(model, groups) if only in n]
    assert names, f"no layer of {groups} matched {only!r}"
    prepare(model, layer_bits={n: [bits] for n in names})
    return model.eval()


@pytest.mark.parametrize("group", UPSTREAM_GROUPS)
def test_each_group_selects_exactly_its_layers_of_the_torchaudio_hubert(load_upstream, group):
    names = select_layers(load_upstream(), [group])
    assert sorted(names) == sorted(PREFIX + n for n in EXPECTED[group])


def test_every_linear_and_conv_weight_of_the_upstream_is_quantized_but_the_pre_training_head(load_upstream):
    model = load_upstream()
    every = {n for n, m in model.named_modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv1d))}
    selected = set(select_layers(model, UPSTREAM_GROUPS))
    assert every - selected == {"upstream.model.logit_generator.final_proj"}  # used by pre-training only


def test_the_fairseq_and_torchaudio_patterns_do_not_overlap():
    import re

    torchaudio_names = [n for names in EXPECTED.values() for n in names]
    fairseq_patterns = [patterns[0] for patterns in MODULE_GROUPS.values()]  # the s3prl fairseq-style ones
    assert not [n for n in torchaudio_names if any(re.search(p, n) for p in fairseq_patterns)]


def test_quantizing_only_the_attention_projections_changes_the_output(load_upstream, wavs):
    reference = last_hidden(load_upstream(), wavs)
    for bits in (1, 2):
        output = last_hidden(quantized(load_upstream, ["transformer"], bits, only=".attention."), wavs)
        assert not torch.allclose(output, reference, atol=1e-3), f"{bits}-bit attention left the output as is"


def test_output_error_grows_as_bits_drop(load_upstream, wavs):
    reference = last_hidden(load_upstream(), wavs)
    error = {
        bits: (last_hidden(quantized(load_upstream, UPSTREAM_GROUPS, bits), wavs) - reference).abs().max()
        for bits in (2, 8)
    }
    assert 0 < error[8] < error[2]


def test_weight_normalised_pos_conv_is_quantized_from_its_normalised_weight(load_upstream):
    float_model = load_upstream()
    conv = dict(float_model.named_modules())[PREFIX + EXPECTED["pos_conv"][0]]
    assert torch.nn.utils.parametrize.is_parametrized(conv, "weight")  # torch's parametrized weight norm
    model = quantized(load_upstream, ["pos_conv"], 8)
    (name, supernet), = quantized_layers(model)
    latent = dict(model.named_modules())[name].parametrizations.weight.original
    torch.testing.assert_close(latent, conv.weight.detach())


def test_quantized_output_equals_the_float_model_with_dequantized_weights(load_upstream, wavs, tmp_path):
    # Not pos_conv: a float model keeps torch's weight-norm parametrization (original0/1), which a
    # packed file, holding one plain weight per quantized layer, cannot fill. The ESPnet test
    # below decodes a packed file with pos_conv quantized, into a model built quantized.
    fake_quantized = quantized(load_upstream, ["transformer", "feature_extractor"], 2)
    save_packed(fake_quantized, tmp_path / "upstream.mpq")
    dequantized = load_upstream()
    load_packed(dequantized, tmp_path / "upstream.mpq")  # plain weights <- s * codes
    assert not list(quantized_layers(dequantized))
    torch.testing.assert_close(last_hidden(fake_quantized, wavs), last_hidden(dequantized, wavs), atol=1e-5, rtol=0)


# ---- through ESPnet: fine-tune, compress, export, decode the packed file ---------------------------

@pytest.fixture(scope="module")
def espnet_runs(tiny_asr_corpus, tiny_espnet_hubert_ckpt, tmp_path_factory):
    """A 32-bit model on the espnet_hubert_local upstream, and joint (every upstream group and the
    downstream, 2/4/8 bits, 1 search epoch of 2) on the same upstream.

    joint starts from the 32-bit model (--init_param) and distils it, as stage 10 of the recipe does.
    """
    from test_espnet_integration import ALL_GROUPS as ALL_WITH_DOWNSTREAM
    from test_espnet_integration import train, write_config

    from espnet_mpq.register import register

    register()
    workdir = tmp_path_factory.mktemp("espnet_hubert")
    fp32 = train(tiny_asr_corpus, write_config(workdir / "fp32.yaml", "espnet_hubert_local",
                                               tiny_espnet_hubert_ckpt, "none"), workdir / "fp32")
    config = write_config(
        workdir / "joint.yaml", "espnet_hubert_local", tiny_espnet_hubert_ckpt, "joint",
        {"candidate_bits": [2, 4, 8], "target_avg_bits": 3.0, "search_length": 1, "modules": ALL_WITH_DOWNSTREAM},
        {"size_penalty_weight": 1.0, "kd_weight": 1.0, "teacher_config": str(fp32.out / "config.yaml"),
         "teacher_model_file": str(fp32.out / "valid.loss.best.pth")},
    )
    joint = train(tiny_asr_corpus, config, workdir / "joint", "--max_epoch", "2",
                  "--init_param", str(fp32.out / "valid.loss.best.pth"))
    return workdir, fp32, joint


def test_decoding_the_packed_file_gives_the_hypotheses_of_the_trained_model(tiny_asr_corpus, espnet_runs):
    from test_espnet_integration import build_model, decode

    from espnet_mpq.bin.export import main as export

    workdir, _, joint = espnet_runs
    out = joint.out
    export(["--asr_train_config", str(out / "config.yaml"), "--asr_model_file", str(out / "2epoch.pth"),
            "--output", str(out / "model.mpq"), "--output_report", str(out / "size.json")])
    model = build_model(out / "config.yaml", out / "2epoch.pth")
    layers = [name for name, _ in quantized_layers(model) if name.startswith("frontend.")]
    assert len(layers) == sum(len(names) for names in EXPECTED.values())
    from_checkpoint = decode(tiny_asr_corpus, out / "config.yaml", out / "2epoch.pth", workdir / "dec_pth")
    from_packed = decode(tiny_asr_corpus, out / "config.yaml", out / "model.mpq", workdir / "dec_mpq")
    assert len(from_checkpoint) == 4
    assert from_packed == from_checkpoint


def test_init_param_gives_the_student_the_32_bit_models_positional_conv(espnet_runs):
    from test_espnet_integration import build_model

    from espnet_mpq.core.transform import fold_weight_norm

    workdir, fp32, _ = espnet_runs
    conv = "frontend.upstream.upstream.model.wav2vec2.encoder.transformer.pos_conv_embed.conv"
    fp32_state = torch.load(fp32.out / "valid.loss.best.pth", map_location="cpu", weights_only=True)
    g, v = (fp32_state[f"{conv}.parametrizations.weight.original{i}"] for i in (0, 1))
    config = workdir / "joint" / "config.yaml"
    student = build_model(config)  # as asr_train builds it, before --init_param
    from espnet2.torch_utils.load_pretrained_model import load_pretrained_model

    load_pretrained_model(str(fp32.out / "valid.loss.best.pth"), student, ignore_init_mismatch=False)  # as asr_train
    latent = student.state_dict()[f"{conv}.parametrizations.weight.original"]
    torch.testing.assert_close(latent, fold_weight_norm(g, v))


def test_the_frontend_feeds_the_upstream_on_its_weights_device(tiny_espnet_hubert_ckpt, wavs):
    """s3prl's espnet_hubert expert fixes ``device`` when built (CUDA whenever a GPU is visible);
    decoding with --ngpu 0 on a GPU machine then sent CUDA inputs to CPU weights. Seen on an
    H200; here a stale device is simulated."""
    from espnet_mpq.asr.frontend import S3prlMpqFrontend

    frontend = S3prlMpqFrontend(upstream="espnet_hubert_local", path_or_url=tiny_espnet_hubert_ckpt,
                                multilayer_feature=True).eval()
    expert = frontend.upstream.upstream
    expert.device = torch.device("meta")  # as built on a device the model has since left
    with torch.no_grad():
        feats, lengths = frontend(*wavs)
    assert feats.device.type == "cpu" and torch.isfinite(feats).all()
