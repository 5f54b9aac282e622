"""Configuration: frozen dataclasses for every component, named presets and recipes.

- :mod:`muse_mini.config.checks`: the checks on field values, each naming its field.
- :mod:`muse_mini.config.schema`: the dataclasses, one per component.
- :mod:`muse_mini.config.overrides`: ``"section.field=value"`` overrides, configs from JSON.
- :mod:`muse_mini.config.presets`: ``toy``, ``cc3m``, ``paper-3b``; the ``quick``,
  ``full`` and ``smoke`` recipes.

Components read the sizes they share from each other (the transformer's
vocabulary is its tokenizer's codebook, its sequence length is the tokenizer's
grid), so an override of one stays consistent everywhere. Overrides use dotted
paths, from Python or the command line::

    cfg = get_preset("toy", overrides=["base.depth=4", "sampler.steps=8"])
"""

from muse_mini.config.checks import SEED_RANGE, check_seed
from muse_mini.config.overrides import apply_overrides, from_dict, load_config
from muse_mini.config.presets import (
    PRESETS, RECIPES, SMOKE_OVERRIDES, T5_XXL, TRAIN_SECTIONS, Recipe, get_preset, get_recipe, seed_overrides,
)
from muse_mini.config.schema import (
    DATA_FEEDS, DATA_RUNTIME_FIELDS, LOWRES_INPUTS, MESH_AXES, POSITION_INITS, TOKENIZER_STAGES, DataConfig,
    DecoderConfig, EditConfig, MeshConfig, MuseConfig, SamplerConfig, SuperResConfig, TextConfig, TrainConfig,
    TransformerConfig, VQGANConfig, tokenizer_stage_config,
)

__all__ = [
    "DATA_FEEDS", "DATA_RUNTIME_FIELDS", "DataConfig", "DecoderConfig", "EditConfig", "LOWRES_INPUTS", "MESH_AXES",
    "MeshConfig", "MuseConfig", "POSITION_INITS", "PRESETS", "RECIPES",
    "Recipe", "SEED_RANGE", "SMOKE_OVERRIDES", "SamplerConfig", "SuperResConfig", "T5_XXL", "TOKENIZER_STAGES",
    "TextConfig", "TrainConfig", "TransformerConfig", "VQGANConfig", "apply_overrides", "check_seed",
    "TRAIN_SECTIONS", "from_dict", "get_preset", "get_recipe", "load_config", "seed_overrides",
    "tokenizer_stage_config",
]
