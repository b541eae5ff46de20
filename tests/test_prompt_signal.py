"""The merger seam's prompt signal: an adapter hands a merger that `needs` "text" the LLM input embeddings of
the prompt after the visual tokens (what CDPruner weighs relevance by), on every path that calls a merger."""
import functools

import numpy as np
import pytest
import torch

from aim.merging import MERGERS, Merged
from tests.tiny_models import OPTIONS, QUESTION, build, frames


class RecordText:
    """Keeps every token and records the `text` it was given."""

    needs = ("text",)

    def __init__(self):
        self.texts = []

    def __call__(self, features, metric=None, attention=None, grid=None, text=None, carry=None):
        self.texts.append(text)
        f, t, _ = features.shape
        return Merged(features, torch.arange(t).expand(f, t), carry)


# each tiny model built once for this module: the tests only read them (prepare)
@functools.cache
def onevision():
    return build("llava_onevision_tiny")


@functools.cache
def qwen2_vl():
    return build("qwen2_vl_tiny")


@functools.cache
def qwen3_vl():
    return build("qwen3_vl_tiny")


@functools.cache
def internvl():
    return build("internvl3_tiny")


@pytest.mark.parametrize("make,modality", [(onevision, "video"), (onevision, "image"), (qwen2_vl, "video"),
                                           (qwen2_vl, "image"), (qwen3_vl, "video"), (internvl, "video"),
                                           (internvl, "image")])
def test_a_merger_that_needs_text_gets_the_prompt_after_the_visual_tokens(make, modality):
    ad = make()
    visual = frames(2) if modality == "video" else np.random.default_rng(0).integers(0, 255, (1, 300, 400, 3), dtype=np.uint8)
    merger = RecordText()
    ad.prepare(visual, QUESTION, OPTIONS, merger, modality=modality)
    _, after = ad.prompt_ids(QUESTION, OPTIONS, "letter", modality)
    assert merger.texts and all(torch.equal(t, ad.embed_tokens(after)) for t in merger.texts)


def test_cdpruner_runs_through_an_adapter_and_keeps_its_count():
    from aim.merging import NoMerge, kept_tokens

    ad = onevision()
    per_frame = ad.prepare(frames(2), QUESTION, OPTIONS, NoMerge()).visual_tokens // 2
    inputs = ad.prepare(frames(2), QUESTION, OPTIONS, MERGERS.build("cdpruner", ratio=0.25))
    assert inputs.visual_tokens == 2 * kept_tokens(per_frame, 0.25)


@pytest.mark.parametrize("make", [qwen2_vl, qwen3_vl, internvl])
def test_cdpruner_runs_through_every_video_adapter_and_keeps_a_quarter_of_each_group(make):
    from aim.merging import NoMerge, kept_tokens

    ad = make()
    full = ad.prepare(frames(4), QUESTION, OPTIONS, NoMerge())
    groups = {"qwen2_vl": 2, "qwen3_vl": 2, "internvl": 4}[make.__name__]
    inputs = ad.prepare(frames(4), QUESTION, OPTIONS, MERGERS.build("cdpruner", ratio=0.25))
    assert inputs.visual_tokens == groups * kept_tokens(full.visual_tokens // groups, 0.25)
