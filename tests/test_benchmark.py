"""Specification of the benchmark driver (egs/librispeech/local/benchmark.py) and its systems.

The driver's reading of results is tested on fabricated result files, as run.sh's stages
write them (size.json, decode_<set>/score.json, compression_time.json, train.yaml), in a
temporary work directory: no training, no decoding. Only the direct comparisons run the
real scorer (espnet_mpq.bin.score), on a few hypothesis lines.
"""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from espnet_mpq.bin.compose_config import compose, two_stage_search

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "egs" / "librispeech"
sys.path.insert(0, str(RECIPE / "local"))  # benchmark.py imports its neighbours, as when run as a script
BENCH = RECIPE / "conf" / "tuning" / "bench"
BASE = RECIPE / "conf" / "train_asr.yaml"
SETS = {"test_clean": "test_synth", "test_other": "test_other_synth"}  # the built-in corpus's names
TARGETS = ("3.5", "3.0", "2.5", "2.0", "1.75", "1.5", "1.25")
REF = {"u1": "the cat sat on the mat", "u2": "a dog ran in the park", "u3": "birds sing at dawn"}


@pytest.fixture(scope="module")
def benchmark():
    spec = importlib.util.spec_from_file_location("benchmark", RECIPE / "local" / "benchmark.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fake_system(exp: Path, name: str, method: str, ratio: float, wer: tuple[float, float],
                lossless: tuple, seconds: float = 100, target: float | None = None,
                avg_bits: float | None = None, seed: int | None = None, hyp: dict | None = None) -> Path:
    """The result files local/benchmark.py reads for one system, per condition (clean, other)."""
    sys_dir = exp / ("asr_fp32" if name == "fp32" else f"asr_mpq_{name}")
    sys_dir.mkdir(parents=True)
    quantized = 0 if name == "fp32" else 10
    (sys_dir / "size.json").write_text(json.dumps({
        "model": {"average_bits": 32 / ratio if avg_bits is None else avg_bits, "quantized_params": quantized,
                  "compression_ratio": ratio},
        "upstream": {"compression_ratio": ratio}, "packed_mb": 1 / ratio}))
    for dset, w, ok in zip(SETS.values(), wer, lossless):
        (sys_dir / f"decode_{dset}").mkdir()
        mapsswe = None if ok is None else {"p_value": 0.5 if ok else 0.01}
        (sys_dir / f"decode_{dset}" / "score.json").write_text(json.dumps(
            {"systems": {name: {"wer": w, "mapsswe": mapsswe, "lossless": ok}}}))
        (sys_dir / f"decode_{dset}" / "text").write_text(
            "".join(f"{u} {t}\n" for u, t in (hyp or REF).items()))
    config = {"frontend_conf": {"quantizer": method, "quantizer_conf": {}}}
    if target is not None:
        config["frontend_conf"]["quantizer_conf"]["target_avg_bits"] = target
    if seed is not None:
        config["seed"] = seed
    (sys_dir / "train.yaml").write_text(yaml.safe_dump(config))
    if name != "fp32":
        (sys_dir / "compression_time.json").write_text(json.dumps(
            {"seconds": seconds, "device": "cpu", "quantizer": method}))
    return sys_dir


def row(name: str, method: str, target: float | None = None, avg_bits: float = 2.0, **extra) -> dict:
    """A system row as system_result builds it (only the keys the summaries read)."""
    return {"name": name, "method": method, "target_bits": target, "avg_bits": avg_bits, "seed": 0,
            "on_target": None if target is None else True, "lossless": True, "compression_ratio": 32 / avg_bits,
            "compression_seconds": 100, **extra}


def collect(benchmark, tmp_path: Path, systems: list[str]) -> dict:
    """local/benchmark.py's collection over tmp_path/work, with the test sets' references in place."""
    for dset in SETS.values():
        ref = tmp_path / "work" / "dump" / "raw" / dset / "text"
        ref.parent.mkdir(parents=True, exist_ok=True)
        ref.write_text("".join(f"{u} {t}\n" for u, t in REF.items()))
    return benchmark.collect(tmp_path / "work" / "exp", systems, tmp_path / "results", tmp_path / "RESULTS.md",
                             "bench", "python local/benchmark.py")


# ---------------------------------------------------------------- the systems
def test_benchmark_systems_are_tracked_and_quantize_every_weight_group(benchmark):
    from espnet_mpq.quantizers import ALL_GROUPS, build_config

    names = {path.stem for path in BENCH.glob("*.yaml")}
    expected = ({f"ptq_{b}bit" for b in (8, 4, 3)} | {f"uniform_{b}bit" for b in (8, 4, 3, 2)}
                | {f"{m}_{t}bit" for m in ("joint", "two_stage") for t in TARGETS}
                | {f"{m}_{t}bit_seed2" for m in ("joint", "two_stage") for t in ("3.0", "2.5", "1.5")})
    assert names == expected
    ignored = subprocess.run(["git", "check-ignore", *map(str, BENCH.glob("*.yaml"))], cwd=REPO,
                             capture_output=True, text=True).stdout
    assert ignored == "", f"benchmark configs ignored by git: {ignored}"
    for name in sorted(names):
        frontend = compose(BASE, [BENCH / f"{name}.yaml"])["frontend_conf"]
        quantizer = build_config(frontend["quantizer"], frontend.get("quantizer_conf"))
        assert quantizer.name == benchmark.first_seed_name(name).rsplit("_", 1)[0], name
        assert set(quantizer.modules) == set(ALL_GROUPS), name
        if quantizer.name in ("joint", "two_stage"):
            assert quantizer.candidate_bits == [1, 2, 3, 4, 8]
            assert quantizer.target_avg_bits == float(benchmark.first_seed_name(name).split("_")[-1][:-3]), name


def test_every_trained_system_has_the_same_epochs_learning_rate_and_distillation():
    def training(name: str) -> str:
        config = compose(BASE, [BENCH / f"{name}.yaml"])
        kd = {k: config["model_conf"][k] for k in ("ctc_weight", "kd_weight", "kd_temperature")}
        return json.dumps([config["max_epoch"], config["optim"], config["optim_conf"], config["scheduler"],
                           config.get("scheduler_conf"), config["batch_size"], kd])

    trained = [p.stem for p in BENCH.glob("*.yaml") if not p.stem.startswith("ptq")]
    settings = {name: training(name) for name in trained}
    assert len(set(settings.values())) == 1, settings
    assert json.loads(settings["uniform_2bit"])[:3] == [2, "adam", {"lr": 0.0005}]
    assert json.loads(settings["uniform_2bit"])[-1]["kd_weight"] == 1.0


def test_a_seed_repeat_differs_only_by_its_seed_which_reaches_both_two_stage_trainings(tmp_path):
    for name in ("joint_2.5bit", "joint_1.5bit", "two_stage_2.5bit", "two_stage_1.5bit"):
        first, repeat = (compose(BASE, [BENCH / f"{n}.yaml"]) for n in (name, f"{name}_seed2"))
        assert "seed" not in first and repeat.pop("seed") == 2
        assert repeat == first, name
    # run.sh stage 10 composes two_stage's search and its QAT run from the system's train.yaml.
    train = tmp_path / "train.yaml"
    train.write_text(yaml.safe_dump(compose(BASE, [BENCH / "two_stage_1.5bit_seed2.yaml"])))
    search = two_stage_search(compose(train))
    stage2 = compose(train, [], [f"frontend_conf.quantizer_conf.bit_config={tmp_path / 'bits.yaml'}"])
    assert search["seed"] == 2 and search["max_epoch"] == 1
    assert stage2["seed"] == 2 and stage2["max_epoch"] == 2


def test_the_bench_config_set_decodes_both_test_conditions():
    script = '. conf/sets/bench.sh && echo "$work|$test_subsets"'
    out = subprocess.run(["bash", "-c", f"test_clean=T1; test_other=T2; {script}"], cwd=RECIPE,
                         capture_output=True, text=True, check=True).stdout.strip()
    assert out == "reference|T1 T2"


# ---------------------------------------------------------------- reading the results
def test_lossless_needs_both_conditions(benchmark, tmp_path):
    exp = tmp_path / "work" / "exp"
    fake_system(exp, "fp32", "none", 1.0, (20.0, 30.0), (None, None))
    fake_system(exp, "uniform_8bit", "uniform", 4.0, (20.0, 30.0), (True, True))
    fake_system(exp, "uniform_4bit", "uniform", 8.0, (20.1, 33.0), (True, False))
    fake_system(exp, "uniform_3bit", "uniform", 10.0, (24.0, 30.2), (False, True))
    result = collect(benchmark, tmp_path, ["uniform_8bit", "uniform_4bit", "uniform_3bit"])
    rows = {r["name"]: r for r in result["systems"]}
    assert [rows[n]["lossless"] for n in ("uniform_8bit", "uniform_4bit", "uniform_3bit")] == [True, False, False]
    assert rows["uniform_4bit"]["lossless_per_condition"] == {"test_clean": True, "test_other": False}
    assert rows["uniform_4bit"]["wer"] == {"test_clean": 20.1, "test_other": 33.0}
    assert rows["uniform_4bit"]["p_value"] == {"test_clean": 0.5, "test_other": 0.01}
    assert rows["fp32"]["p_value"] == {"test_clean": None, "test_other": None} and rows["fp32"]["lossless"]
    assert result["test_set"] == SETS
    assert result["lossless_ratio"]["uniform"] == 4.0


def test_systems_decoded_with_different_lms_are_refused(benchmark, tmp_path):
    exp = tmp_path / "work" / "exp"
    fake_system(exp, "fp32", "none", 1.0, (20.0, 30.0), (None, None))
    uniform = fake_system(exp, "uniform_8bit", "uniform", 4.0, (20.0, 30.0), (True, True))
    assert collect(benchmark, tmp_path, ["uniform_8bit"])["lm_file"] is None
    (uniform / f"decode_{SETS['test_clean']}" / "decoding.txt").write_text("lm_file: /w/exp/lm/valid.loss.best.pth\n")
    with pytest.raises(SystemExit, match="different LMs"):
        collect(benchmark, tmp_path, ["uniform_8bit"])


def test_a_system_missing_one_conditions_score_is_not_finished(benchmark, tmp_path):
    exp = tmp_path / "work" / "exp"
    fake_system(exp, "fp32", "none", 1.0, (20.0, 30.0), (None, None))
    sys_dir = fake_system(exp, "uniform_8bit", "uniform", 4.0, (20.0, 30.0), (True, True))
    (sys_dir / "decode_test_other_synth" / "score.json").unlink()
    assert benchmark.system_result("uniform_8bit", sys_dir, SETS) is None


def test_librispeech_set_names_are_found_from_the_32_bit_decoding(benchmark, tmp_path):
    for dset in ("test_clean", "test_other"):
        (tmp_path / f"decode_{dset}").mkdir()
    assert benchmark.condition_sets(tmp_path) == {"test_clean": "test_clean", "test_other": "test_other"}
    assert benchmark.condition_sets(tmp_path / "none_yet") == SETS


def test_deployed_bits_are_on_target_only_inside_the_promised_window(benchmark):
    assert benchmark.on_target(2.0, 2.0) and benchmark.on_target(1.95, 2.0) and benchmark.on_target(1.97, 2.0)
    assert not benchmark.on_target(1.9499, 2.0) and not benchmark.on_target(2.0001, 2.0)
    assert benchmark.on_target(3.0, None) is None


def test_an_off_target_system_is_flagged_listed_and_not_counted(benchmark, tmp_path):
    exp = tmp_path / "work" / "exp"
    fake_system(exp, "fp32", "none", 1.0, (20.0, 30.0), (None, None))
    fake_system(exp, "joint_2.0bit", "joint", 15.0, (20.1, 30.1), (True, True), target=2.0, avg_bits=1.80)
    fake_system(exp, "joint_3.0bit", "joint", 10.0, (20.1, 30.1), (True, True), target=3.0, avg_bits=2.98)
    result = collect(benchmark, tmp_path, ["joint_2.0bit", "joint_3.0bit"])
    rows = {r["name"]: r for r in result["systems"]}
    assert rows["joint_2.0bit"]["on_target"] is False and rows["joint_3.0bit"]["on_target"] is True
    assert rows["joint_2.0bit"]["target_bits"] == 2.0 and rows["fp32"]["target_bits"] is None
    assert result["off_target"] == [{"name": "joint_2.0bit", "target_bits": 2.0, "avg_bits": 1.80}]
    assert result["lossless_ratio"]["joint"] == 10.0  # not the off-target 15.0
    text = (tmp_path / "RESULTS.md").read_text()
    assert "off target (not counted in the lossless ratios): joint_2.0bit (1.800 bits for target 2.0)" in text
    assert "| joint_2.0bit | joint | 0 | 2.00 | 1.800 | **no** |" in text


def test_comparisons_pair_joint_with_two_stage_of_its_target_and_seed_and_with_uniform_of_its_bits(benchmark):
    rows = [row("joint_3.0bit", "joint", 3.0), row("joint_3.0bit_seed2", "joint", 3.0),
            row("joint_2.5bit", "joint", 2.5), row("joint_2.5bit_seed2", "joint", 2.5),
            row("joint_1.75bit", "joint", 1.75),
            row("two_stage_3.0bit", "two_stage", 3.0), row("two_stage_2.5bit", "two_stage", 2.5),
            row("two_stage_2.5bit_seed2", "two_stage", 2.5), row("two_stage_2.0bit", "two_stage", 2.0),
            row("uniform_3bit", "uniform", avg_bits=3.0), row("uniform_2bit", "uniform", avg_bits=2.0),
            row("ptq_3bit", "ptq", avg_bits=3.0)]
    assert sorted(benchmark.comparison_pairs(rows)) == sorted([
        ("joint_vs_two_stage", "joint_3.0bit", "two_stage_3.0bit"),
        ("joint_vs_uniform", "joint_3.0bit", "uniform_3bit"),
        ("joint_vs_two_stage", "joint_2.5bit", "two_stage_2.5bit"),
        ("joint_vs_two_stage", "joint_2.5bit_seed2", "two_stage_2.5bit_seed2"),
    ])


def test_comparison_p_values_come_from_scoring_the_two_systems_hypotheses(benchmark, tmp_path):
    exp = tmp_path / "work" / "exp"
    worse = {"u1": "the cat sat on a hat", "u2": "a dog ran in the park", "u3": "birds sing"}
    fake_system(exp, "fp32", "none", 1.0, (20.0, 30.0), (None, None))
    fake_system(exp, "joint_3.0bit", "joint", 10.0, (20.0, 30.0), (True, True), target=3.0, avg_bits=3.0)
    fake_system(exp, "uniform_3bit", "uniform", 10.0, (25.0, 35.0), (True, True), avg_bits=3.0, hyp=worse)
    result = collect(benchmark, tmp_path, ["joint_3.0bit", "uniform_3bit"])
    [comparison] = result["comparisons"]
    assert [comparison[k] for k in ("kind", "a", "b")] == ["joint_vs_uniform", "joint_3.0bit", "uniform_3bit"]
    words = sum(len(t.split()) for t in REF.values())
    assert comparison["wer_a"] == {"test_clean": 0.0, "test_other": 0.0}
    assert comparison["wer_b"]["test_other"] == pytest.approx(100 * 4 / words)  # 2 substitutions, 2 deletions
    assert set(comparison["p_value"]) == {"test_clean", "test_other"}
    assert all(0 <= p <= 1 for p in comparison["p_value"].values())
    scored = exp / "comparisons" / "joint_3.0bit_vs_uniform_3bit" / "decode_test_other_synth" / "score.json"
    assert json.loads(scored.read_text())["baseline"] == "joint_3.0bit"
    assert "| joint_3.0bit | uniform_3bit | 0.00 | 25.00 |" in (tmp_path / "RESULTS.md").read_text()


def test_seed_spread_gives_both_wers_per_condition_and_their_difference(benchmark, tmp_path):
    exp = tmp_path / "work" / "exp"
    fake_system(exp, "fp32", "none", 1.0, (20.0, 30.0), (None, None))
    fake_system(exp, "joint_2.5bit", "joint", 12.0, (21.0, 31.0), (True, True), target=2.5, avg_bits=2.47)
    fake_system(exp, "joint_2.5bit_seed2", "joint", 12.5, (22.5, 30.0), (True, True), target=2.5, avg_bits=2.46,
                seed=2)
    fake_system(exp, "two_stage_1.5bit_seed2", "two_stage", 20.0, (25.0, 35.0), (False, False), target=1.5,
                avg_bits=1.5, seed=2)  # its first seed has not finished: no spread yet
    result = collect(benchmark, tmp_path, ["joint_2.5bit", "joint_2.5bit_seed2", "two_stage_1.5bit_seed2"])
    assert result["seed_spread"] == [{
        "systems": ["joint_2.5bit", "joint_2.5bit_seed2"], "seeds": [0, 2], "avg_bits": [2.47, 2.46],
        "lossless": [True, True], "wer": {"test_clean": [21.0, 22.5], "test_other": [31.0, 30.0]},
        "difference": {"test_clean": pytest.approx(1.5), "test_other": pytest.approx(-1.0)},
    }]
    # A repeat is not one more try at the lossless ratio (uniform has one run per size).
    assert result["lossless_ratio"]["joint"] == 12.0 and result["lossless_ratio"]["two_stage"] is None


def test_benchmark_summary_takes_the_best_lossless_ratio_and_the_time_ratio(benchmark, tmp_path):
    exp = tmp_path / "work" / "exp"
    fake_system(exp, "fp32", "none", 1.0, (20.0, 30.0), (None, None))
    fake_system(exp, "uniform_4bit", "uniform", 7.5, (20.1, 30.1), (True, True), 100)
    fake_system(exp, "uniform_2bit", "uniform", 14.0, (30.0, 40.0), (False, False), 100, avg_bits=2.0)
    fake_system(exp, "joint_2.0bit", "joint", 15.0, (20.2, 30.2), (True, True), 120, target=2.0, avg_bits=2.0)
    fake_system(exp, "joint_1.5bit", "joint", 19.0, (25.0, 35.0), (False, False), 100, target=1.5, avg_bits=1.5)
    fake_system(exp, "two_stage_2.0bit", "two_stage", 12.0, (20.3, 30.3), (True, True), 330, target=2.0, avg_bits=2.0)
    png = exp / "asr_mpq_joint_2.0bit" / "bits_per_layer.png"
    png.write_bytes(b"\x89PNG picture of joint_2.0bit")
    result = collect(benchmark, tmp_path, ["uniform_4bit", "uniform_2bit", "joint_2.0bit", "joint_1.5bit",
                                           "two_stage_2.0bit", "ptq_4bit"])
    assert [r["name"] for r in result["systems"]] == ["fp32", "uniform_4bit", "uniform_2bit", "two_stage_2.0bit",
                                                      "joint_2.0bit", "joint_1.5bit"]
    assert result["lossless_ratio"] == {"ptq": None, "uniform": 7.5, "two_stage": 12.0, "joint": 15.0}
    assert result["lossless_ratio_joint_over_uniform"] == pytest.approx(2.0)
    assert result["lossless_ratio_joint_over_two_stage"] == pytest.approx(1.25)
    assert result["compression_time_ratio_two_stage_over_joint"] == pytest.approx(330 / 120)  # the pair at 2.0
    assert [(c["a"], c["b"]) for c in result["comparisons"]] == [("joint_2.0bit", "uniform_2bit"),
                                                                 ("joint_2.0bit", "two_stage_2.0bit")]
    lowest = result["lowest_lossless_joint"]
    assert lowest["name"] == "joint_2.0bit" and lowest["source"].endswith("asr_mpq_joint_2.0bit/bits_per_layer.png")
    assert (tmp_path / "results" / lowest["bits_per_layer_png"]).read_bytes() == png.read_bytes()
    assert f"![bits per layer of joint_2.0bit](results/{lowest['bits_per_layer_png']})" in (
        tmp_path / "RESULTS.md").read_text()
    assert (tmp_path / "results" / "wer_vs_bits.png").stat().st_size > 0
    assert (tmp_path / "results" / "wer_vs_ratio.png").stat().st_size > 0


def test_a_contended_timing_is_marked_and_left_out_of_the_time_ratio(benchmark, tmp_path):
    exp = tmp_path / "work" / "exp"
    fake_system(exp, "fp32", "none", 1.0, (20.0, 30.0), (None, None))
    for target, joint_s, two_stage_s in ((2.0, 120, 330), (3.0, 100, 900)):
        fake_system(exp, f"joint_{target}bit", "joint", 15.0, (20.2, 30.2), (True, True), joint_s, target=target,
                    avg_bits=target)
        fake_system(exp, f"two_stage_{target}bit", "two_stage", 12.0, (20.3, 30.3), (True, True), two_stage_s,
                    target=target, avg_bits=target)
    (exp / "asr_mpq_two_stage_3.0bit" / "TIMING_CONTENDED").write_text("ran beside the test suite\n")
    result = collect(benchmark, tmp_path, ["joint_2.0bit", "two_stage_2.0bit", "joint_3.0bit", "two_stage_3.0bit"])
    rows = {r["name"]: r for r in result["systems"]}
    assert rows["two_stage_3.0bit"]["timing_contended"] == "ran beside the test suite"
    assert rows["two_stage_2.0bit"]["timing_contended"] is None
    assert result["compression_time_ratio_two_stage_over_joint"] == pytest.approx(330 / 120)  # not (330+900)/220
    assert result["compression_time_pairs"] == [["joint_2.0bit", "two_stage_2.0bit"]]
    assert result["compression_time_excluded"] == [
        {"pair": ["joint_3.0bit", "two_stage_3.0bit"], "reason": "two_stage_3.0bit: ran beside the test suite"}]
    md = (tmp_path / "RESULTS.md").read_text()
    assert "| 900 (contended) |" in md and "left out, contended: joint_3.0bit / two_stage_3.0bit" in md


def test_benchmark_json_keeps_every_key_of_the_first_benchmark(benchmark, tmp_path):
    first = json.loads((RECIPE / "results" / "v1" / "benchmark.json").read_text())
    exp = tmp_path / "work" / "exp"
    fake_system(exp, "fp32", "none", 1.0, (20.0, 30.0), (None, None))
    fake_system(exp, "joint_2.0bit", "joint", 15.0, (20.2, 30.2), (True, True), target=2.0, avg_bits=2.0)
    collect(benchmark, tmp_path, ["joint_2.0bit"])
    written = json.loads((tmp_path / "results" / "benchmark.json").read_text())
    assert set(first) <= set(written)
    assert set(first["systems"][0]) | {"target_bits", "on_target", "seed"} <= set(written["systems"][1])
    assert set(first["lossless_ratio"]) <= set(written["lossless_ratio"])


# ---------------------------------------------------------------- RESULTS.md
def test_results_md_rewrites_only_the_marked_block(benchmark, tmp_path):
    exp = tmp_path / "work" / "exp"
    fake_system(exp, "fp32", "none", 1.0, (20.0, 30.0), (None, None))
    fake_system(exp, "uniform_8bit", "uniform", 4.0, (20.0, 30.0), (True, True))
    begin, end = benchmark.markers("bench")
    gpu_begin, gpu_end = benchmark.markers("gpu")
    gpu = f"{gpu_begin}\nthe GPU table\n{gpu_end}\n"
    md = tmp_path / "RESULTS.md"
    md.write_text(f"# Results\n\nWritten by hand above.\n\n{begin}\nold table\n{end}\n\n"
                  f"## Analysis\n\nWritten by hand below.\n\n{gpu}")
    collect(benchmark, tmp_path, ["uniform_8bit"])
    first = md.read_text()
    assert first.startswith(f"# Results\n\nWritten by hand above.\n\n{begin}\n## Benchmark, config set `bench`")
    assert first.endswith(f"{end}\n\n## Analysis\n\nWritten by hand below.\n\n{gpu}")
    assert "old table" not in first and "| uniform_8bit | uniform |" in first
    assert first.count(begin) == first.count(end) == 1
    collect(benchmark, tmp_path, ["uniform_8bit"])
    assert md.read_text().count("| uniform_8bit | uniform |") == 1


def test_results_md_without_markers_gets_the_block_on_top_and_keeps_the_rest(benchmark):
    begin, end = benchmark.markers("bench")
    text = "# Benchmark results\n\n## What the figures mean (written by hand)\n\nKeep me.\n"
    replaced = benchmark.replace_block(text, "generated\n", "bench")
    assert replaced == f"{begin}\ngenerated\n{end}\n\n{text}"
    assert benchmark.replace_block(replaced, "again\n", "bench") == f"{begin}\nagain\n{end}\n\n{text}"
    assert benchmark.replace_block("", "generated\n", "bench") == f"{begin}\ngenerated\n{end}\n"


def test_results_md_with_one_marker_is_refused(benchmark):
    begin, _ = benchmark.markers("bench")
    with pytest.raises(ValueError, match="one benchmark marker"):
        benchmark.replace_block(f"hand\n{begin}\ntable without its end\n", "generated\n", "bench")


# ---------------------------------------------------------------- the wall clock

def test_the_clock_adds_each_call_and_is_written_while_the_call_runs(benchmark, tmp_path):
    clock = tmp_path / "benchmark_clock.json"
    clock.write_text(json.dumps({"joint_2.0bit": 100.0, "fp32 (stages 1-9)": 7.0}))
    seen = tmp_path / "seen.json"
    # The command reads the clock file after 1.2 s of its own run: the ticks (every 0.1 s) must have
    # raised it by then (by at least 0.3 s: a margin for a loaded machine).
    code = benchmark.timed_run(["bash", "-c", f"sleep 1.2; cp '{clock}' '{seen}'; sleep 0.2"], clock,
                               "joint_2.0bit", tick_s=0.1)
    assert code == 0
    assert 100.3 <= json.loads(seen.read_text())["joint_2.0bit"] < 102.5
    final = json.loads(clock.read_text())
    assert 101.4 <= final["joint_2.0bit"] < 104 and final["fp32 (stages 1-9)"] == 7.0


def test_the_clock_counts_a_failed_call(benchmark, tmp_path):
    clock = tmp_path / "benchmark_clock.json"
    assert benchmark.timed_run(["bash", "-c", "sleep 0.3; exit 3"], clock, "ptq_4bit", tick_s=0.1) == 3
    assert 0.3 <= json.loads(clock.read_text())["ptq_4bit"] < 1.5


@pytest.mark.parametrize("content", [b'{"joint_2.0bit": 10', b'{"joint_2.0bit": "\xff"}'])
def test_a_clock_that_is_not_json_is_refused_with_its_path(benchmark, tmp_path, content):
    clock = tmp_path / "benchmark_clock.json"
    clock.write_bytes(content)
    with pytest.raises(ValueError, match=r"benchmark_clock\.json is not valid JSON"):
        benchmark.wall_clock(clock)


def test_a_contended_note_that_is_not_utf8_still_marks_the_timing(benchmark, tmp_path):
    (tmp_path / benchmark.CONTENDED).write_bytes(b"ran beside \xe9 tests\n")
    assert benchmark.contended_note(tmp_path) == "ran beside \ufffd tests"
