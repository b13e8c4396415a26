"""Specification of the quantizer configs (YAML quantizer / quantizer_conf) and their application."""
import pytest
import torch
from torch import nn

from espnet_mpq.core.transform import bit_widths, quantized_layers
from espnet_mpq.quantizers import (
    QUANTIZERS,
    TwoStageConfig,
    apply_quantizer,
    build_config,
    read_bit_config,
    select_layers,
    write_bit_config,
)


def test_registry_holds_the_five_methods():
    assert list(QUANTIZERS) == ["none", "ptq", "uniform", "joint", "two_stage"]


def test_unknown_quantizer_lists_the_known_ones():
    with pytest.raises(ValueError, match=r"quantizer 'lsq' is not known: choose from \['none', 'ptq'"):
        build_config("lsq")


def test_unknown_option_lists_the_allowed_ones():
    with pytest.raises(ValueError, match=r"has no option\(s\) \['bitz'\]: its options are .*'bits'"):
        build_config("uniform", {"bitz": 4})


@pytest.mark.parametrize(
    "name, conf, message",
    [
        ("uniform", {"bits": 0}, "bits=0 is not allowed"),
        ("joint", {"candidate_bits": []}, "empty"),
        ("joint", {"candidate_bits": [4, 4, 8]}, "strictly increasing"),
        ("joint", {"candidate_bits": [2, 4], "target_avg_bits": 1.5}, "target_avg_bits=1.5 .* smallest"),
        ("joint", {"tau_end": 0, "target_avg_bits": 4}, "tau_end=0 is not allowed"),
        ("joint", {"schedule_unit": "step", "target_avg_bits": 4}, "'epoch' or 'iteration'"),
        ("joint", {"modules": ["everything"], "target_avg_bits": 4}, "choose from"),
        ("joint", {}, "target_avg_bits=None is not allowed: give target_avg_bits or size_budget_mb"),
        ("joint", {"target_avg_bits": 3, "size_budget_mb": 2.0}, "size_budget_mb=2.0 .* not both"),
        ("joint", {"target_avg_bits": 3, "search_length": 0}, "search_length=0 is not allowed: it must be > 0"),
        ("joint", {"target_avg_bits": 3, "allocation": "greedy"}, r"allocation='greedy' .* \['budget', 'argmax'\]"),
        ("joint", {"target_avg_bits": 3, "arch_lr": "fast"}, "arch_lr='fast' is not allowed: it must be a number"),
        ("joint", {"target_avg_bits": "3.5"}, "target_avg_bits='3.5' is not allowed: it must be a number or null"),
        ("joint", {"target_avg_bits": 3, "compile": "yes"}, "compile='yes' is not allowed: it must be true or false"),
        ("uniform", {"bits": 4.0}, "bits=4.0 is not allowed: it must be an integer"),
        ("uniform", {"modules": []}, r"modules=\[\] is not allowed: quantizer 'uniform' needs at least one group"),
        ("two_stage", {"bit_config": "/nonexistent/bits.yaml", "target_avg_bits": 4}, "no such file"),
    ],
)
def test_bad_options_fail_at_construction_naming_the_value(name, conf, message):
    with pytest.raises(ValueError, match=message):
        build_config(name, conf)


def test_temperature_anneals_exponentially_over_the_search():
    config = build_config("joint", {"tau_start": 1.0, "tau_end": 0.01, "search_length": 4, "target_avg_bits": 4})
    assert config.temperature(0) == pytest.approx(1.0)
    assert config.temperature(2) == pytest.approx(0.1)
    assert config.temperature(4) == pytest.approx(0.01)
    assert config.temperature(10) == pytest.approx(0.01)
    assert not config.search_done(3.99) and config.search_done(4)


def test_two_stage_search_ends_where_joints_search_ends():
    conf = {"search_length": 2, "target_avg_bits": 3.0}
    two_stage, joint = build_config("two_stage", conf), build_config("joint", conf)
    assert [two_stage.search_done(p) for p in (1.9, 2.0)] == [joint.search_done(p) for p in (1.9, 2.0)] == [False, True]


def test_size_budget_is_the_only_target_when_given():
    config = build_config("joint", {"size_budget_mb": 10.0})
    assert config.target_avg_bits is None and config.size_target().size_mb == 10.0


def test_none_quantizer_accepts_no_modules():
    assert build_config("none", {"modules": []}).layer_candidates() is None


def test_penalties_are_zero_at_the_target_and_grow_above_it():
    hinge = build_config("joint", {"penalty": "hinge", "target_avg_bits": 3})
    squared = build_config("joint", {"penalty": "squared", "target_avg_bits": 3})
    t = torch.tensor
    assert hinge.size_penalty(t(3.0), 3.0) == 0 and hinge.size_penalty(t(2.0), 3.0) == 0
    assert hinge.size_penalty(t(4.5), 3.0) == pytest.approx(0.5)
    assert squared.size_penalty(t(4.5), 3.0) == pytest.approx(0.25)


class FakeUpstream(nn.Module):
    """Names as in s3prl's wav2vec2/HuBERT model."""

    def __init__(self):
        super().__init__()
        self.feature_extractor = nn.Module()
        self.feature_extractor.conv_layers = nn.ModuleList([nn.Sequential(nn.Conv1d(1, 4, 3))])
        self.post_extract_proj = nn.Linear(4, 8)
        self.encoder = nn.Module()
        self.encoder.pos_conv = nn.Sequential(nn.Conv1d(8, 8, 3))
        layer = nn.Module()
        layer.self_attn = nn.Module()
        for p in ("q_proj", "k_proj", "v_proj", "out_proj"):
            setattr(layer.self_attn, p, nn.Linear(8, 8))
        layer.fc1, layer.fc2 = nn.Linear(8, 16), nn.Linear(16, 8)
        self.encoder.layers = nn.ModuleList([layer])
        self.final_proj = nn.Linear(8, 4)


def test_module_groups_select_by_s3prl_layer_names():
    up = FakeUpstream()
    assert select_layers(up, ["transformer"]) == [
        "post_extract_proj", "encoder.layers.0.self_attn.q_proj", "encoder.layers.0.self_attn.k_proj",
        "encoder.layers.0.self_attn.v_proj", "encoder.layers.0.self_attn.out_proj", "encoder.layers.0.fc1",
        "encoder.layers.0.fc2",
    ]
    assert select_layers(up, ["feature_extractor", "pos_conv"]) == ["feature_extractor.conv_layers.0.0",
                                                                     "encoder.pos_conv.0"]
    assert "final_proj" not in select_layers(up, ["transformer", "feature_extractor", "pos_conv"])


def test_bit_config_round_trips_and_drives_two_stage_training(tmp_path):
    up = FakeUpstream()
    names = select_layers(up, ["transformer"])
    path = tmp_path / "bits.yaml"
    write_bit_config(path, {f"frontend.{n}": (2 if i % 2 else 8) for i, n in enumerate(names)})
    config = build_config("two_stage", {"bit_config": str(path), "target_avg_bits": 4})
    assert apply_quantizer(config, up, ["transformer"], bit_config_prefix="frontend.") == names
    assert {f"frontend.{k}": v for k, v in bit_widths(up).items()} == read_bit_config(path)
    assert all(s.is_fixed for _, s in quantized_layers(up))


def test_bit_config_that_does_not_match_the_layers_is_reported(tmp_path):
    path = tmp_path / "bits.yaml"
    write_bit_config(path, {"frontend.encoder.layers.0.fc1": 4, "frontend.encoder.layers.9.fc1": 4})
    config = TwoStageConfig(bit_config=str(path), target_avg_bits=4)
    with pytest.raises(ValueError, match=r"does not match the model's quantized layers: missing .* unknown "
                                         r"\['frontend.encoder.layers.9.fc1'\]"):
        apply_quantizer(config, FakeUpstream(), ["transformer"], bit_config_prefix="frontend.")


def test_bit_config_with_bad_bits_is_reported(tmp_path):
    path = tmp_path / "bits.yaml"
    path.write_text("a.b: 12\n")
    with pytest.raises(ValueError, match=r"layer 'a.b': bit-width 12 is not allowed"):
        read_bit_config(path)


@pytest.mark.parametrize("text", ["a: [: b\n", "", "- 4\n"])
def test_a_bit_config_that_is_not_a_mapping_of_yaml_is_refused_by_path(tmp_path, text):
    path = tmp_path / "bits.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=rf"bit config {path} (is not valid YAML|must be a non-empty YAML mapping)"):
        read_bit_config(path)


def test_bit_config_with_bits_outside_the_candidates_is_refused(tmp_path):
    path = tmp_path / "bits.yaml"
    write_bit_config(path, {"frontend.encoder.layers.0.fc1": 3, "frontend.encoder.layers.0.fc2": 4})
    with pytest.raises(ValueError, match=r"layer 'frontend.encoder.layers.0.fc1' has 3 bits .* not among "
                                         r"candidate_bits \[2, 4, 8\]"):
        build_config("two_stage", {"bit_config": str(path), "target_avg_bits": 4, "candidate_bits": [2, 4, 8]})
