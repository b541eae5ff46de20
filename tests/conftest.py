import numpy as np
import pytest
import torch

from aim.models.llava_onevision import LlavaOnevisionAdapter, LlavaOnevisionConfig


@pytest.fixture(scope="session")
def tiny_adapter():
    """The bundled model's architecture with random weights: real HF classes, no checkpoint needed."""
    from transformers import LlavaOnevisionForConditionalGeneration

    from aim.toy.tokenizer import build_tokenizer
    from aim.toy.train import toy_config

    torch.manual_seed(0)
    tokenizer = build_tokenizer()
    model = LlavaOnevisionForConditionalGeneration(toy_config(tokenizer))
    return LlavaOnevisionAdapter(model, tokenizer, LlavaOnevisionConfig(pretrained="(random)"))


@pytest.fixture(scope="session")
def small_benchmark(tmp_path_factory):
    from aim.data.synthetic import generate_benchmark

    return generate_benchmark(tmp_path_factory.mktemp("bench") / "synthetic", num_samples=10, seed=7, progress=False)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture(scope="session")
def benchmark_roots(tmp_path_factory):
    """Tiny copies of the paper's benchmarks in their release layouts, by dataset config name."""
    from tests.benchmark_fixtures import write_all

    return write_all(tmp_path_factory.mktemp("benchmarks"))
