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


tiny = functools.cache(build)  # each preset's tiny model built once for this module: the tests only read them


@pytest.mark.parametrize("preset,modality", [("llava_onevision_tiny", "video"), ("llava_onevision_tiny", "image"),
                                             ("qwen2_vl_tiny", "video"), ("qwen2_vl_tiny", "image"),
                                             ("qwen3_vl_tiny", "video"), ("internvl3_tiny", "video"),
                                             ("internvl3_tiny", "image")])
def test_a_merger_that_needs_text_gets_the_prompt_after_the_visual_tokens(preset, modality):
    ad = tiny(preset)
    visual = frames(2) if modality == "video" else np.random.default_rng(0).integers(0, 255, (1, 300, 400, 3), dtype=np.uint8)
    merger = RecordText()
    ad.prepare(visual, QUESTION, OPTIONS, merger, modality=modality)
    _, after = ad.prompt_ids(QUESTION, OPTIONS, "letter", modality)
    assert merger.texts and all(torch.equal(t, ad.embed_tokens(after)) for t in merger.texts)


def test_cdpruner_runs_through_an_adapter_and_keeps_its_count():
    from aim.merging import NoMerge, kept_tokens

    ad = tiny("llava_onevision_tiny")
    per_frame = ad.prepare(frames(2), QUESTION, OPTIONS, NoMerge()).visual_tokens // 2
    inputs = ad.prepare(frames(2), QUESTION, OPTIONS, MERGERS.build("cdpruner", ratio=0.25))
    assert inputs.visual_tokens == 2 * kept_tokens(per_frame, 0.25)


@pytest.mark.parametrize("preset,groups", [("qwen2_vl_tiny", 2), ("qwen3_vl_tiny", 2), ("internvl3_tiny", 4)])
def test_cdpruner_runs_through_every_video_adapter_and_keeps_a_quarter_of_each_group(preset, groups):
    from aim.merging import NoMerge, kept_tokens

    ad = tiny(preset)
    full = ad.prepare(frames(4), QUESTION, OPTIONS, NoMerge())
    inputs = ad.prepare(frames(4), QUESTION, OPTIONS, MERGERS.build("cdpruner", ratio=0.25))
    assert inputs.visual_tokens == groups * kept_tokens(full.visual_tokens // groups, 0.25)
