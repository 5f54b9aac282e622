"""Presets, overrides, and the packaging contract."""

import dataclasses
import re
import tomllib
from pathlib import Path

import pytest

from muse_mini.config import (
    MuseConfig, PRESETS, RECIPES, TransformerConfig, apply_overrides, from_dict, get_preset, get_recipe,
    load_config,
)

ROOT = Path(__file__).resolve().parents[1]


def test_toy_preset_matches_the_issue_geometry():
    cfg = get_preset("toy")
    assert (cfg.tokenizer.image_size, cfg.tokenizer.downsample, cfg.tokenizer.grid) == (32, 4, 8)
    assert (cfg.highres_tokenizer.image_size, cfg.highres_tokenizer.downsample,
            cfg.highres_tokenizer.grid) == (64, 4, 16)
    assert cfg.text.encoder == "minilm" and cfg.text.width == 384


def test_paper_preset_follows_tables_4_5_6():
    cfg = get_preset("paper-3b")
    assert (cfg.base.depth, cfg.base.width, cfg.base.mlp_dim) == (48, 2048, 8192)
    assert cfg.text.width == 4096
    s = cfg.superres
    assert (s.lowres_depth, s.depth, s.width, s.mlp_dim) == (16, 32, 1024, 4096)
    assert cfg.tokenizer.codebook_size == cfg.highres_tokenizer.codebook_size == 8192
    assert (cfg.tokenizer.image_size, cfg.tokenizer.downsample, cfg.tokenizer.grid) == (256, 16, 16)
    assert (cfg.highres_tokenizer.image_size, cfg.highres_tokenizer.downsample,
            cfg.highres_tokenizer.grid) == (512, 8, 64)
    assert cfg.base_train.optimizer == "adafactor" and cfg.base_train.weight_decay == 0.045
    assert cfg.tokenizer_train.optimizer == "adam" and cfg.tokenizer_train.b2 == 0.99


def test_overrides_are_typed_and_nested():
    depth = get_preset("toy").base.depth
    cfg = get_preset("toy", [f"base.depth={depth + 1}", "sampler.guidance=1.5", "base_train.clip_norm=none",
                             "--tokenizer.channel_mult=1,2", "sampler.top_k=3"])
    assert cfg.base.depth == depth + 1 and isinstance(cfg.base.depth, int)
    assert cfg.sampler.guidance == 1.5
    assert cfg.base_train.clip_norm is None
    assert cfg.tokenizer.channel_mult == (1, 2) and cfg.tokenizer.downsample == 2
    assert cfg.sampler.top_k == 3
    # the original preset is untouched (frozen dataclasses)
    assert get_preset("toy").base.depth == depth
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.base.depth = 3


@pytest.mark.parametrize("override, message", [
    ("base.depht=4", "has no field 'depht'"),
    ("base.depth=four", "expected int"),
    ("base=4", "is a section"),
    ("basedepth", "section.field=value"),
    ("data.kinds=single,colour", "data.kinds: kinds must be a non-empty subset"),
    ("base.pos_init=sinusoidal", "TransformerConfig.pos_init: expected one of ('normal', 'sincos')"),
    ("superres.attention=flash", "SuperResConfig.attention: expected one of ('xla', 'cudnn')"),
])
def test_bad_overrides_name_the_problem(override, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        get_preset("toy", [override])


def test_unknown_preset_lists_choices():
    with pytest.raises(ValueError, match="paper-3b"):
        get_preset("huge")


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_config_round_trips_through_json_dict(name):
    cfg = get_preset(name)
    assert from_dict(MuseConfig, cfg.to_dict()) == cfg


def test_apply_overrides_works_on_a_single_section():
    assert apply_overrides(TransformerConfig(), ["depth=3"]).depth == 3


def _names(specs):
    return {re.split(r"[<>=!~\[ ]", s.strip(), maxsplit=1)[0].lower().replace("_", "-") for s in specs}


def test_environment_yml_agrees_with_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = _names(project["dependencies"]) | _names(project["optional-dependencies"]["test"])
    text = (ROOT / "environment.yml").read_text()
    listed = set()
    for line in text.splitlines():
        m = re.match(r"\s*-\s+([A-Za-z0-9_.\-]+)", line)
        if m and not line.strip().startswith("- -"):
            listed.add(m.group(1).lower().replace("_", "-"))
    listed -= {"python", "pip", "conda-forge"}
    assert wanted == listed, f"only in pyproject: {wanted - listed}; only in environment.yml: {listed - wanted}"


def test_runtime_is_torch_free_and_jax_floor_fits_accelerator_images():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert not any(d.lower().startswith("torch") for d in deps)
    jax_floor = next(d for d in deps if d.startswith("jax"))
    major, minor = map(int, re.search(r">=\s*(\d+)\.(\d+)", jax_floor).groups())
    assert (major, minor) <= (0, 11)


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_recipes_change_only_the_fields_their_overrides_name(name):
    recipe = RECIPES[name]
    base, cfg = get_preset(recipe.preset).to_dict(), get_recipe(name).to_dict()
    named = {o.split("=", 1)[0] for o in recipe.overrides}
    changed = {f"{sec}.{k}" for sec, fields in cfg.items() if isinstance(fields, dict)
               for k, v in fields.items() if base[sec][k] != v}
    assert changed <= named, changed - named


def test_full_recipe_keeps_its_measured_models():
    from muse_mini.data.captions import KINDS

    cfg = get_recipe("full")
    assert (cfg.base.depth, cfg.base.mlp_dim, cfg.base.pos_init, cfg.base_train.steps) == (4, 512, "normal", 16000)
    assert (cfg.superres.mlp_dim, cfg.superres.lowres_margin, cfg.superres_train.steps) == (512, 2, 3500)
    assert cfg.data.kinds == KINDS and cfg.decoder.enabled
    assert cfg.base_train.steps > get_preset("toy").base_train.steps  # "the same models for longer"


def test_recipe_overrides_apply_after_the_recipes_and_unknown_recipes_are_named():
    assert get_recipe("full", ["base.depth=3"]).base.depth == 3
    with pytest.raises(ValueError, match="recipe: expected one of"):
        get_recipe("slow")


@pytest.mark.parametrize("override, message", [
    ("base.depth=-1", "TransformerConfig.depth: expected an integer >= 1, got -1"),
    ("base.num_heads=3", "TransformerConfig.num_heads: expected a divisor of width 128"),
    ("superres.mlp_dim=0", "SuperResConfig.mlp_dim: expected an integer >= 1"),
    ("base_train.steps=0", "TrainConfig.steps: expected an integer >= 1"),
    ("base_train.batch_size=-4", "TrainConfig.batch_size"),
    (f"base_train.seed={2 ** 70}", "TrainConfig.seed: expected an integer seed"),
    (f"data.seed={-2 ** 64}", "data.seed"),
    ("tokenizer.codebook_size=0", "VQGANConfig.codebook_size"),
    ("tokenizer.image_size=30", "VQGANConfig.image_size: expected a multiple of the downsampling factor 4"),
    ("decoder.channels=0", "decoder.channels"),
    ("text.max_length=0", "text.max_length"),
])
def test_bad_sizes_name_their_field(override, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        get_preset("toy", [override])


def test_load_config_names_a_damaged_file(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(get_preset("toy").to_json())
    assert load_config(path) == get_preset("toy")
    path.write_text("{not json")
    with pytest.raises(ValueError, match=re.escape(str(path))):
        load_config(path)
