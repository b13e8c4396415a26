#!/usr/bin/env python3
"""Compose an ESPnet training config from a base config, presets and overrides.

Usage:
    python -m espnet_mpq.bin.compose_config --base conf/train_asr.yaml \\
        --preset ../../conf/quantizer/joint_3.5bit.yaml \\
        --set model_conf.teacher_config=exp/asr_fp32/config.yaml --set max_epoch=3 \\
        --output exp/asr_mpq_joint_3.5bit/train.yaml

The YAML files are deep-merged in order, later wins: --base, then each --preset,
then each --set. Mappings merge key by key; any other value (lists included) is
replaced whole. A file may itself say ``preset: PATH`` (PATH relative to that
file, or a list of them): the preset is merged first, then the file's other keys.
That is how a recipe's conf/tuning/X.yaml reuses the top-level conf/quantizer/
presets, without copies, on top of the recipe's own model config:

    # conf/tuning/train_mpq_joint_3.5bit.yaml
    preset: ../../../../conf/quantizer/joint_3.5bit.yaml
    max_epoch: 4

``--set key.sub=value`` parses ``value`` as YAML (``3`` is an int, ``null`` is
None, ``[2, 4]`` a list); a dotted key creates missing mappings. The output is
written atomically (temporary name, then rename).

``--two_stage_search`` turns a composed two_stage config into its stage 1: the run
stops when joint's search phase would end. With ``schedule_unit: epoch`` that is
max_epoch = ceil(search_length) (a fractional search_length trains the rest of its
last epoch at the fixed bits); with ``iteration`` it is one epoch of
num_iters_per_epoch = ceil(search_length) * accum_grad batches.
"""
from __future__ import annotations

import argparse
import copy
import logging
import math
import os
from pathlib import Path
from typing import Any

import yaml

PRESET_KEY = "preset"


def deep_merge(base: dict, override: dict) -> dict:
    """A new dict: ``base`` with ``override`` merged in (mappings key by key, other values replaced)."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def load_config(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict:
    """Read a YAML mapping, resolving its ``preset:`` (relative to the file) recursively."""
    path = Path(path).resolve()
    if path in _seen:
        raise ValueError(f"preset cycle: {' -> '.join(map(str, (*_seen, path)))}")
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist")
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a YAML mapping, not {type(data).__name__}")
    presets = data.pop(PRESET_KEY, None) or []
    merged: dict = {}
    for preset in [presets] if isinstance(presets, str) else presets:
        merged = deep_merge(merged, load_config(path.parent / preset, (*_seen, path)))
    return deep_merge(merged, data)


def parse_override(item: str) -> dict:
    """``a.b=value`` -> {"a": {"b": value}}, the value parsed as YAML."""
    key, sep, value = item.partition("=")
    if not sep or not key or any(not part for part in key.split(".")):
        raise ValueError(f"--set {item!r}: expected key.sub=value")
    nested: Any = yaml.safe_load(value) if value else ""
    for part in reversed(key.split(".")):
        nested = {part: nested}
    return nested


def compose(base: str | Path, presets: list[str | Path] = (), overrides: list[str] = ()) -> dict:
    config = load_config(base)
    for preset in presets:
        config = deep_merge(config, load_config(preset))
    for item in overrides:
        config = deep_merge(config, parse_override(item))
    return config


def two_stage_search(config: dict) -> dict:
    """The stage-1 (search-only) config of a two_stage config, as the module docstring says."""
    from espnet_mpq.quantizers import build_config

    frontend = config.get("frontend_conf") or {}
    quantizer = build_config(frontend.get("quantizer", "none"), frontend.get("quantizer_conf"))
    if quantizer.name != "two_stage" or not quantizer.searches:
        raise ValueError(f"--two_stage_search needs quantizer two_stage without bit_config, got "
                         f"quantizer {quantizer.name!r}" + (" with a bit_config" if quantizer.name == "two_stage" else ""))
    length = math.ceil(quantizer.search_length)
    if quantizer.schedule_unit == "epoch":
        return deep_merge(config, {"max_epoch": length})
    return deep_merge(config, {"max_epoch": 1, "num_iters_per_epoch": length * int(config.get("accum_grad", 1))})


def write_yaml_atomic(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(yaml.safe_dump(data, sort_keys=False, default_flow_style=None), encoding="utf-8")
    os.replace(tmp, path)


def get_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="base config (e.g. the recipe's conf/train_asr.yaml)")
    parser.add_argument("--preset", action="append", default=[],
                        help="config merged over the base, in order (repeatable)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.SUB=VALUE",
                        help="override merged last, value parsed as YAML (repeatable)")
    parser.add_argument("--two_stage_search", action="store_true",
                        help="write stage 1 of a two_stage config: train only as long as joint's search")
    parser.add_argument("--output", required=True, type=Path, help="composed config to write")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    args = get_args(argv)
    try:
        config = compose(args.base, args.preset, args.overrides)
        if args.two_stage_search:
            config = two_stage_search(config)
    except (OSError, ValueError, yaml.YAMLError) as error:
        raise SystemExit(f"compose_config: {error}")
    write_yaml_atomic(args.output, config)
    logging.info("wrote %s (base %s, presets %s, %d overrides)", args.output, args.base,
                 ", ".join(args.preset) or "none", len(args.overrides))


if __name__ == "__main__":
    main()
