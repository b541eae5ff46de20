from dataclasses import dataclass

import pytest

from aim.data import DATASETS
from aim.merging import MERGERS
from aim.models import MODELS
from aim.pruning import PRUNERS
from aim.registry import Registry, UnknownPluginError


def test_register_build_and_list_names():
    reg = Registry("widget")

    @dataclass
    class WidgetConfig:
        name: str = "plain"
        size: int = 1

    @reg.register("plain", config=WidgetConfig)
    class Plain:
        def __init__(self, name="plain", size=1):
            self.size = size

    @reg.register("fancy")
    def fancy(**cfg):
        return ("fancy", cfg)

    assert reg.names() == ["fancy", "plain"]
    assert reg.build("plain", name="plain", size=3).size == 3  # `name` may travel in the config
    assert reg.build("fancy", a=1) == ("fancy", {"a": 1})
    assert reg.config_schema("plain") is WidgetConfig and reg.config_schema("fancy") is None
    assert "plain" in reg and "other" not in reg


def test_unknown_name_lists_the_known_names():
    reg = Registry("widget")
    reg.register("a")(object)
    reg.register("b")(object)
    with pytest.raises(UnknownPluginError, match=r"unknown widget 'c'; registered widgets: a, b"):
        reg.build("c")


def test_a_name_registers_once():
    reg = Registry("widget")
    reg.register("a")(object)
    with pytest.raises(ValueError, match="already registered"):
        reg.register("a")(object)


def test_every_family_has_its_registry_and_the_unreduced_plugins():
    assert MERGERS.family == "merger" and "none" in MERGERS
    assert PRUNERS.family == "pruner" and "none" in PRUNERS
    assert "llava_onevision" in MODELS
    assert {"video_mcq", "synthetic_video"} <= set(DATASETS.names())
