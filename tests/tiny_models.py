"""The tiny random models of the tests, in one place: a model preset of conf/model/ composed and validated
(`preset`), its adapter built with random weights from the real Hugging Face config classes under seed 0
(`build`; never a hub), the module fixtures over the attention implementations (`adapter_fixtures`), the
bundled toy model's architecture with random weights (`toy_adapter`), and the inputs and stand-in merger the
adapter tests share.

A preset is composed once per set of overrides (Hydra's compose is the slow part of a build); every `build`
makes a fresh model, so no test sees another's changes."""
import copy
import functools
from dataclasses import asdict

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir

from aim.config import validate
from aim.data import synthetic as syn
from aim.merging import Merged
from aim.models import MODELS
from aim.paths import CONF_DIR

QUESTION, OPTIONS = "what colour is the circle ?", ["red", "blue", "green", "yellow"]
ATTENTION = ["sdpa", "eager"]


@functools.lru_cache(maxsize=None)
def _validated_model(name: str, overrides: tuple[str, ...]):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return validate(compose("config", overrides=[f"model={name}", *overrides])).model


def preset(name: str = "qwen2_vl_tiny", overrides=()):
    """The validated model config of preset `name` with config `overrides` (a copy: callers may change it);
    a ConfigError where the overrides are invalid."""
    return copy.deepcopy(_validated_model(name, tuple(overrides)))


def build(name: str, overrides=()):
    """A fresh adapter of preset `name` with random weights drawn under seed 0."""
    cfg = preset(name, overrides)
    torch.manual_seed(0)
    return MODELS.get(cfg.name).from_config(**asdict(cfg))


def adapter_fixtures(name: str):
    """(adapter, sdpa_adapter): module fixtures of preset `name`'s tiny model, `adapter` once per attention
    implementation (test ids [sdpa], [eager]), `sdpa_adapter` the preset as it is (sdpa). A test module
    binds them by name: `adapter, sdpa_adapter = adapter_fixtures("qwen2_vl_tiny")`."""

    @pytest.fixture(scope="module", params=ATTENTION)
    def adapter(request):
        return build(name, [f"model.attn_implementation={request.param}"])

    @pytest.fixture(scope="module")
    def sdpa_adapter():
        return build(name)

    return adapter, sdpa_adapter


def toy_adapter(text_layers: int = 4, attn: str = "sdpa"):
    """The bundled model's architecture (aim.toy: LLaVA-OneVision, SigLIP and Qwen2 classes) with `text_layers`
    decoder layers and random weights drawn under seed 0."""
    from transformers import LlavaOnevisionForConditionalGeneration

    from aim.models.llava_onevision import LlavaOnevisionAdapter, LlavaOnevisionConfig
    from aim.toy.tokenizer import build_tokenizer
    from aim.toy.train import toy_config

    torch.manual_seed(0)
    tok = build_tokenizer()
    model = LlavaOnevisionForConditionalGeneration(toy_config(tok, text_layers=text_layers, attn_implementation=attn))
    return LlavaOnevisionAdapter(model, tok, LlavaOnevisionConfig(pretrained="(random)", attn_implementation=attn))


def frames(num: int = 4) -> np.ndarray:
    """The first `num` frames of the synthetic benchmark's first clip, uint8 [num, H, W, 3]."""
    return syn.render(syn.sample_item(0, 0)[0])[:num]


def noise(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A uniform-noise image, uint8 [1, H, W, 3]."""
    return (np.random.default_rng(seed).random((1, height, width, 3)) * 255).astype(np.uint8)


class KeepEven:
    """A stand-in merger: keeps the even-indexed tokens of every frame group (image, temporal patch), and of
    the carry alike where there is one (Qwen3-VL's DeepStack levels)."""

    needs = ()

    def __call__(self, features, metric=None, attention=None, carry=None):
        idx = torch.arange(0, features.shape[1], 2)
        return Merged(features[:, idx], idx.expand(features.shape[0], -1), None if carry is None else carry[:, idx])
