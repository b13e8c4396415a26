"""Specification of the offline upstream builder (espnet_mpq.upstream_builder, bin/build_upstream)."""
import logging
from pathlib import Path

import pytest
import torch

from espnet_mpq.bin import build_upstream
from espnet_mpq.upstream_builder import (
    PRESETS,
    build_upstream_checkpoint,
    checkpoint_num_params,
    standard_conv_layers,
)

TINY = PRESETS["tiny"]
NUM_HIDDEN_STATES = TINY["num_layers"] + 1  # the input of every layer, then the encoder output
WAV_LENS = (16000, 9600)  # samples: 1.0 s and 0.6 s at 16 kHz
FRAMES = (50, 30)  # one frame per 320 samples: (len - 1) // 320 + 1
WAV2VEC2_BASE_PARAMS = 95_044_608  # fairseq's wav2vec_small.pt


@pytest.fixture(params=["hubert", "wav2vec2"])
def tiny_ckpt(request):
    """(arch, path) of each tiny checkpoint."""
    return request.param, request.getfixturevalue(f"tiny_{request.param}_ckpt")


def _batch():
    wavs = torch.randn(len(WAV_LENS), max(WAV_LENS))  # (B, T)
    return wavs, torch.tensor(WAV_LENS)


def test_checkpoint_reads_with_weights_only(tiny_ckpt):
    arch, path = tiny_ckpt
    ckpt = torch.load(path, weights_only=True)
    hubert_only = {"dictionaries_symbols"} if arch == "hubert" else set()
    assert set(ckpt) == {"task_cfg", "model_cfg", "model_weight"} | hubert_only
    assert type(ckpt["model_cfg"]) is dict and type(ckpt["task_cfg"]) is dict


def test_s3prl_upstream_gives_every_layer_at_20_ms_with_embed_dim(tiny_ckpt):
    from s3prl.nn import S3PRLUpstream

    arch, path = tiny_ckpt
    upstream = S3PRLUpstream(f"{arch}_local", path_or_url=path).eval()
    with torch.no_grad():
        all_hs, all_lens = upstream(*_batch())
    assert upstream.num_layers == NUM_HIDDEN_STATES
    assert upstream.downsample_rates == [320] * NUM_HIDDEN_STATES
    assert [h.shape for h in all_hs] == [(len(WAV_LENS), max(FRAMES), TINY["embed_dim"])] * NUM_HIDDEN_STATES
    assert all(lens.tolist() == list(FRAMES) for lens in all_lens)


def test_loaded_upstream_has_the_checkpoint_parameter_count(tiny_ckpt):
    from s3prl.nn import S3PRLUpstream

    arch, path = tiny_ckpt
    upstream = S3PRLUpstream(f"{arch}_local", path_or_url=path)
    n_loaded = sum(p.numel() for p in upstream.parameters())
    assert n_loaded == checkpoint_num_params(torch.load(path, weights_only=True))


def test_espnet_s3prl_frontend_gives_embed_dim_features(tiny_ckpt):
    from espnet2.asr.frontend.s3prl import S3prlFrontend

    arch, path = tiny_ckpt
    frontend = S3prlFrontend(
        fs=16000, frontend_conf={"upstream": f"{arch}_local", "path_or_url": path}, multilayer_feature=True
    ).eval()
    with torch.no_grad():
        feats, feats_lens = frontend(*_batch())
    assert frontend.output_size() == TINY["embed_dim"]
    assert feats.shape == (len(WAV_LENS), max(FRAMES), TINY["embed_dim"])
    assert feats_lens.tolist() == list(FRAMES)


def test_overrides_replace_preset_values():
    ckpt = build_upstream_checkpoint("hubert", "tiny", num_layers=3, conv_layers=standard_conv_layers(16))
    assert ckpt["model_cfg"]["encoder_layers"] == 3
    assert "encoder.layers.2.fc1.weight" in ckpt["model_weight"]
    assert ckpt["model_weight"]["feature_extractor.conv_layers.1.0.weight"].shape == (16, 16, 3)


def test_conv_layers_accept_a_literal_string():
    spec = "[(32, 10, 5), (32, 8, 4), (32, 4, 4), (32, 4, 4)]"  # 5 * 4 * 4 * 4 = 320
    ckpt = build_upstream_checkpoint("wav2vec2", "tiny", conv_layers=spec)
    assert ckpt["model_weight"]["feature_extractor.conv_layers.3.0.weight"].shape == (32, 32, 4)


def test_same_seed_gives_same_weights_and_another_seed_does_not():
    first = build_upstream_checkpoint("wav2vec2", "tiny", seed=3)["model_weight"]
    again = build_upstream_checkpoint("wav2vec2", "tiny", seed=3)["model_weight"]
    other = build_upstream_checkpoint("wav2vec2", "tiny", seed=4)["model_weight"]
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not torch.equal(first["encoder.layers.0.fc1.weight"], other["encoder.layers.0.fc1.weight"])


def test_building_leaves_the_global_rng_untouched():
    state = torch.random.get_rng_state()
    build_upstream_checkpoint("hubert", "tiny")
    assert torch.equal(torch.random.get_rng_state(), state)


@pytest.mark.parametrize("preset, low, high", [("tiny", 100_000, 500_000), ("small", 2_000_000, 5_000_000)])
def test_test_and_recipe_presets_have_their_intended_size(preset, low, high):
    for arch in ("hubert", "wav2vec2"):
        assert low <= checkpoint_num_params(build_upstream_checkpoint(arch, preset)) <= high


def test_wav2vec2_base_preset_has_the_published_parameter_count():
    assert checkpoint_num_params(build_upstream_checkpoint("wav2vec2", "wav2vec2_base")) == WAV2VEC2_BASE_PARAMS


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(arch="conformer"), r"arch 'conformer' is not allowed: use one of hubert, wav2vec2"),
        (dict(preset="huge"), r"preset 'huge' is not allowed: use one of tiny, small"),
        (dict(conv_layers=[(64, 10, 5), (64, 3, 2)]), r"total stride of 10: .* strides to be 320"),
        (dict(heads=5), r"embed_dim 64 is not divisible by heads 5"),
        (dict(pos_conv_groups=3), r"embed_dim 64 is not divisible by pos_conv_groups 3"),
        (dict(num_layers=0), r"num_layers 0 is not allowed: use a positive integer"),
        (dict(conv_layers="[(64, 10)]"), r"conv_layers .* not allowed: .*\(channels, kernel, stride\) triples"),
        (dict(extractor_mode="batch_norm"), r"extractor_mode 'batch_norm' is not allowed"),
        (dict(embed_size=64), r"unknown upstream option\(s\) \['embed_size'\]: use any of num_layers"),
    ],
)
def test_bad_values_are_rejected_naming_the_value_and_the_choices(kwargs, message):
    args = {"arch": "hubert", "preset": "tiny", **kwargs}
    with pytest.raises(ValueError, match=message):
        build_upstream_checkpoint(**args)


def test_cli_writes_the_checkpoint_and_logs_the_parameter_count(tmp_path, caplog):
    output = tmp_path / "w2v2.pt"
    with caplog.at_level(logging.INFO):
        build_upstream.main(
            ["--arch", "wav2vec2", "--preset", "tiny", "--conv_channels", "32", "--output", str(output)]
        )
    ckpt = torch.load(output, weights_only=True)
    assert ckpt["model_weight"]["feature_extractor.conv_layers.1.0.weight"].shape == (32, 32, 3)
    assert f"{checkpoint_num_params(ckpt)} parameters" in caplog.text
    assert [p.name for p in tmp_path.iterdir()] == ["w2v2.pt"]  # no temporary file left behind


def test_cli_rejects_a_bad_value_with_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_upstream.main(
            ["--arch", "hubert", "--preset", "tiny", "--heads", "5", "--output", str(tmp_path / "x.pt")]
        )
    assert exit_info.value.code == 2
    assert "embed_dim 64 is not divisible by heads 5" in capsys.readouterr().err
    assert not (tmp_path / "x.pt").exists()


# ---- espnet_hubert: ESPnet's HuBERT pre-training model (torchaudio_hubert) -----------------------

def test_espnet_hubert_is_a_state_dict_with_its_config_yaml_beside_it(tiny_espnet_hubert_ckpt):
    import yaml

    state = torch.load(tiny_espnet_hubert_ckpt, weights_only=True)
    config = yaml.safe_load((Path(tiny_espnet_hubert_ckpt).parent / "config.yaml").read_text())
    assert config["encoder"] == "torchaudio_hubert" and config["input_size"] == 1
    assert config["token_list"] == [str(i) for i in range(20)] + ["<unk>"] and config["num_classes"] == 20
    assert "encoder.hubert_pretrain_model.wav2vec2.encoder.transformer.layers.1.attention.q_proj.weight" in state
    assert sorted(p.name for p in Path(tiny_espnet_hubert_ckpt).parent.iterdir()) == ["config.yaml", "model.pth"]


def test_espnet_hubert_rebuilds_from_its_config_with_every_weight_matching(tiny_espnet_hubert_ckpt):
    from espnet2.tasks.hubert import HubertTask

    model, _ = HubertTask.build_model_from_file(None, tiny_espnet_hubert_ckpt, "cpu")  # config.yaml beside
    state = torch.load(tiny_espnet_hubert_ckpt, weights_only=True)
    assert model.state_dict().keys() == state.keys()
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())


def test_espnet_hubert_local_gives_every_transformer_layer_at_20_ms_with_embed_dim(tiny_espnet_hubert_ckpt):
    from s3prl.nn import S3PRLUpstream

    upstream = S3PRLUpstream("espnet_hubert_local", path_or_url=tiny_espnet_hubert_ckpt).eval()
    with torch.no_grad():
        all_hs, all_lens = upstream(*_batch())
    assert upstream.num_layers == TINY["num_layers"]  # transformer layers only: no CNN output
    assert [h.shape for h in all_hs] == [(len(WAV_LENS), max(FRAMES), TINY["embed_dim"])] * TINY["num_layers"]
    assert all(lens.tolist() == list(FRAMES) for lens in all_lens)
    n_loaded = sum(p.numel() for p in upstream.parameters())
    assert n_loaded == checkpoint_num_params({"model_weight": torch.load(tiny_espnet_hubert_ckpt, weights_only=True)})


def test_espnet_hubert_takes_the_spec_sizes():
    ckpt = build_upstream_checkpoint("espnet_hubert", "tiny", num_layers=3, embed_dim=32, ffn_dim=48,
                                     conv_layers=standard_conv_layers(16), num_classes=7)
    prefix = "encoder.hubert_pretrain_model."
    weights = ckpt["model_weight"]
    assert weights[prefix + "wav2vec2.encoder.transformer.layers.2.feed_forward.intermediate_dense.weight"].shape \
        == (48, 32)
    assert weights[prefix + "wav2vec2.feature_extractor.conv_layers.1.conv.weight"].shape == (16, 16, 3)
    assert weights[prefix + "logit_generator.label_embeddings"].shape[0] == 7
