"""bioaug.registry: one shape for every family that grows (arms, generator presets, label sources, networks,
augmentations, metrics)."""
from __future__ import annotations

import dataclasses

import pytest

from bioaug.errors import ConfigError, LabelError
from bioaug.registry import Registry, load_target


def test_members_read_as_a_mapping_in_registration_order_and_register_once():
    registry: Registry[int] = Registry("widget", lambda message: ConfigError("widgets", message))
    assert registry.register("b", 2) == 2
    registry.register("a", 1)
    assert list(registry) == ["b", "a"] and registry["a"] == 1 and "c" not in registry and len(registry) == 2
    with pytest.raises(ValueError, match="widget 'a' is registered twice"):
        registry.register("a", 3)
    assert registry.require("b") == 2
    with pytest.raises(ConfigError) as caught:
        registry.require("c")
    assert str(caught.value) == "widgets: unknown widget 'c'; valid: b, a"


#: Every registry: where it lives, what an unknown name raises and the flag the line names (None: not an option).
REGISTRIES = [
    ("bioaug.evaluate.arms:ARMS", ConfigError, "--arms"),
    ("bioaug.gan.presets:PRESETS", ConfigError, "--preset"),
    ("bioaug.gan.config:DIFF_AUGMENTATIONS", ConfigError, "--diffaugment"),
    ("bioaug.classify.networks:NETWORKS", ConfigError, "--network"),
    ("bioaug.classify.recipes:RECIPES", ConfigError, "--augmentation"),
    ("bioaug.tile.sources:LABEL_SOURCE_TYPES", LabelError, "--label-by"),
    ("bioaug.evaluate.metrics:SCALAR_METRICS", ValueError, None),
]


@pytest.mark.parametrize("target, error, flag", REGISTRIES)
def test_an_unknown_name_in_every_registry_is_one_line_listing_the_valid_names(target, error, flag):
    registry = load_target(target)
    assert len(registry) >= 3
    with pytest.raises(error) as caught:
        registry.require("magic")
    problem = f"unknown {registry.family} 'magic'; valid: {', '.join(registry)}"
    assert str(caught.value) == (f"{flag}: {problem}" if flag else problem)


@pytest.mark.parametrize("config, option, target", [
    ("bioaug.evaluate.config:EvaluateConfig", "arms", "bioaug.evaluate.arms:ARMS"),
    ("bioaug.evaluate.config:EvaluateConfig", "classic_recipe", "bioaug.classify.recipes:RECIPES"),
    ("bioaug.classify.config:ClassifierConfig", "network", "bioaug.classify.networks:NETWORKS"),
    ("bioaug.classify.config:ClassifierConfig", "augmentation", "bioaug.classify.recipes:RECIPES"),
    ("bioaug.gan.config:TrainConfig", "preset", "bioaug.gan.presets:PRESETS"),
    ("bioaug.gan.config:TrainConfig", "diffaugment", "bioaug.gan.config:DIFF_AUGMENTATIONS"),
    ("bioaug.augment.config:AugmentConfig", "classifier", "bioaug.classify.networks:NETWORKS"),
])
def test_options_naming_a_member_check_it_against_the_registry_itself(config, option, target):
    """The registry is the option's ``choices``: a member registered later (a plug-in) is valid at once."""
    cls, registry = load_target(config), load_target(target)
    assert {spec.name: spec for spec in dataclasses.fields(cls)}[option].metadata["choices"] is registry


def test_each_family_names_where_an_unknown_name_came_from():
    from bioaug.gan.presets import get_preset
    from bioaug.tile.config import TileConfig
    from bioaug.tile.sources import make_label_source

    with pytest.raises(ConfigError, match=r"^--preset: unknown generator 'stylegan9'; valid: plain, resnet"):
        get_preset("stylegan9")
    config = TileConfig()
    config.label_by = "telepathy"  # past validation, as a caller building configs by hand might
    with pytest.raises(LabelError, match=r"^--label-by: unknown label source 'telepathy'; valid: none, "):
        make_label_source(config)
