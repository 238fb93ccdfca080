"""bioaug.registry: one shape for every family that grows (arms, generator presets, label sources)."""
from __future__ import annotations

import pytest

from bioaug.errors import ConfigError, LabelError
from bioaug.registry import Registry


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


def test_each_family_names_where_an_unknown_name_came_from():
    from bioaug.evaluate.arms import ARMS
    from bioaug.gan.presets import get_preset
    from bioaug.tile.config import TileConfig
    from bioaug.tile.sources import make_label_source

    with pytest.raises(ConfigError, match=r"^arms: unknown arm 'magic'; valid: real, classic, "):
        ARMS.require("magic")
    with pytest.raises(ConfigError, match=r"option 'preset': unknown generator 'stylegan9'; valid: plain, resnet"):
        get_preset("stylegan9")
    config = TileConfig()
    config.label_by = "telepathy"  # past validation, as a caller building configs by hand might
    with pytest.raises(LabelError, match=r"^--label-by: unknown label source 'telepathy'; valid: none, "):
        make_label_source(config)
