"""A clip reducer's ragged result through the whole system (issue #20, the seam): every adapter places the kept
tokens of each frame (temporal patch for Qwen) at the positions they had unreduced, frames keeping different
counts and a frame keeping none (its text stays); the pruning hook, the FLOP counts (fvcore and analytic),
budget planning and the records take the ragged counts. Tiny random models of every preset."""
from dataclasses import dataclass

import pytest
import torch

from aim.merging import MERGERS, ClipReduced, NoMerge
from aim.models import VISUAL
from aim.models.qwen3_vl import Qwen3VLAdapter
from aim.pruning import PRUNERS
from aim.pruning.hooks import TokenPruner
from tests.pruning_reference import masked_logits
from tests.tiny_models import OPTIONS, QUESTION, build, frames, noise

# preset -> frames shown: 4 frames (Qwen: 8 frames, 4 temporal patches), so group counts 0, k, 2k, 0
PRESETS = {"llava_onevision_tiny": 4, "llava_1.5_tiny": 4, "qwen2_vl_tiny": 8, "qwen2_5_vl_tiny": 8,
           "qwen3_vl_tiny": 8, "internvl3_tiny": 4}


@dataclass
class RaggedConfig:
    name: str = "ragged_spec"
    k: int = 3


class Ragged:
    """A clip reducer for the spec: frame f keeps (f % 3) * k of its tokens (frame 0 none), every other one
    from the second on (indices 1, 3, 5, ...), with its carry alike."""

    scope = "clip"
    needs = ()

    def __init__(self, name: str = "ragged_spec", k: int = 3):
        self.k = k

    def counts(self, frames: int, tokens: int) -> list[int]:
        return [min((f % 3) * self.k, tokens // 2) for f in range(frames)]

    def kept_total(self, frames: int, tokens: int, grid=None) -> int:
        return sum(self.counts(frames, tokens))

    def __call__(self, features, carry=None, **signals):
        f, t, _ = features.shape
        counts = self.counts(f, t)
        frame = torch.cat([torch.full((c,), i, dtype=torch.long) for i, c in enumerate(counts)])
        index = torch.cat([1 + 2 * torch.arange(c) for c in counts])
        return ClipReduced(features[frame, index], frame, index, None if carry is None else carry[frame, index])


@pytest.fixture
def registered(monkeypatch):
    """`ragged_spec` registered for this test only (the registry restored afterwards)."""
    monkeypatch.setattr(MERGERS, "_entries", dict(MERGERS._entries))
    MERGERS.register("ragged_spec", config=RaggedConfig)(Ragged)


@pytest.fixture(scope="module", params=list(PRESETS))
def model(request):
    return build(request.param), frames(PRESETS[request.param])


def visual_positions(inputs):
    """Position ids of the visual tokens: [1, V] (1D RoPE) or [3, V] (M-RoPE)."""
    pos = inputs.position_ids.reshape(-1, inputs.position_ids.shape[-1])
    return pos[:, inputs.token_roles.to(pos.device) == VISUAL]


def assert_placed_as_unreduced(full, reduced):
    """The reduced inputs hold, for each group, `Ragged`'s kept tokens at exactly the unreduced inputs' positions
    and embeddings of those (group, index), and every text token of the unreduced inputs unchanged."""
    groups = len(full.visual_per_group)
    tokens = full.visual_per_group[0]
    counts = Ragged().counts(groups, tokens)
    assert counts[0] == 0 and len(set(counts)) == 3
    assert reduced.visual_per_group == counts and reduced.visual_tokens == sum(counts)
    frame = torch.cat([torch.full((c,), i) for i, c in enumerate(counts)])
    index = torch.cat([1 + 2 * torch.arange(c) for c in counts])
    full_pos = visual_positions(full).reshape(-1, groups, tokens)
    assert torch.equal(visual_positions(reduced), full_pos[:, frame, index])
    full_embeds = full.inputs_embeds[0, full.token_roles == VISUAL].reshape(groups, tokens, -1)
    assert torch.equal(reduced.inputs_embeds[0, reduced.token_roles == VISUAL], full_embeds[frame, index])
    # every text token (a frame that keeps nothing keeps its label / timestamp and markers) stays as it was
    text = lambda x: (x.position_ids.reshape(-1, x.position_ids.shape[-1])[:, x.token_roles != VISUAL],  # noqa: E731
                      x.inputs_embeds[0, x.token_roles != VISUAL], x.token_roles[x.token_roles != VISUAL])
    for a, b in zip(text(reduced), text(full)):
        assert torch.equal(a, b)


def test_a_ragged_result_is_placed_at_the_unreduced_positions_of_its_kept_frame_and_index(model):
    ad, video = model
    full, reduced = (ad.prepare(video, QUESTION, OPTIONS, m) for m in (NoMerge(), Ragged()))
    assert Ragged().counts(len(full.visual_per_group), 99)[-1] == 0  # the last frame keeps none
    assert_placed_as_unreduced(full, reduced)
    if isinstance(ad, Qwen3VLAdapter):  # each kept token's own DeepStack levels (the tower's), as its features
        levels = ad.encode_frames(ad.pixel_values(video))["carry"]  # [groups, tokens, levels * D]
        counts = reduced.visual_per_group
        frame = torch.cat([torch.full((c,), i) for i, c in enumerate(counts)])
        index = torch.cat([1 + 2 * torch.arange(c) for c in counts])
        expected = levels[frame, index].reshape(len(frame), 2, -1).transpose(0, 1)
        assert torch.equal(torch.stack(reduced.llm_kwargs["deepstack_visual_embeds"]), expected)


def test_an_image_s_tiles_are_the_groups_of_a_clip_reducer():
    """InternVL3's dynamic tiling: 2 x 3 tiles and the thumbnail, seven groups of 64 tokens."""
    ad = build("internvl3_tiny")
    image = noise(100, 150)
    full, reduced = (ad.prepare(image, QUESTION, OPTIONS, m, modality="image") for m in (NoMerge(), Ragged()))
    assert len(full.visual_per_group) == 7
    assert_placed_as_unreduced(full, reduced)


def test_a_per_frame_merger_s_inputs_list_the_same_count_for_every_group(model):
    ad, video = model
    merger = MERGERS.build("aim", ratio=0.25)
    inputs = ad.prepare(video, QUESTION, OPTIONS, merger)
    groups = len(inputs.visual_per_group)
    assert inputs.visual_per_group == [inputs.visual_tokens // groups] * groups


def test_pruning_after_a_ragged_merge_equals_the_masked_reference(model):
    ad, video = model
    inputs = ad.prepare(video, QUESTION, OPTIONS, Ragged())
    first = type(ad).prunable_from(ad.model.config)[0]
    pruner = PRUNERS.build("aim", l1=first, l2=first + 1)
    with TokenPruner(ad.decoder_layers, pruner).attached(inputs.token_roles) as trace:
        pruned = ad.prefill_logits(inputs)
    assert trace.visual_tokens_per_layer[0] == inputs.visual_tokens == sum(inputs.visual_per_group)
    assert trace.visual_tokens_per_layer[-1] == 0
    reference = masked_logits(ad, inputs.inputs_embeds, inputs.position_ids, trace.kept_indices,
                              len(inputs.token_roles), **inputs.llm_kwargs)
    torch.testing.assert_close(pruned, reference.float(), atol=1e-4, rtol=1e-4)


def test_fvcore_counts_a_ragged_prefill_as_the_analytic_model_does(model):
    from aim.efficiency.analytic import llm_prefill_flops
    from aim.efficiency.fvcore_count import count_llm_prefill

    ad, video = model
    inputs = ad.prepare(video, QUESTION, OPTIONS, Ragged())
    first = type(ad).prunable_from(ad.model.config)[0]
    counted = count_llm_prefill(ad, inputs, PRUNERS.build("aim", l1=first, l2=first + 1))
    per_layer = [inputs.text_tokens + v for v in counted["visual_tokens_per_layer"]]
    assert counted["visual_tokens_per_layer"][0] == sum(inputs.visual_per_group)
    analytic = llm_prefill_flops(ad.text_config, per_layer)
    assert counted["llm_prefill_flops"] == pytest.approx(analytic, rel=0.01)


def composed_with_ragged(*overrides, k=3):
    """A run's config with merger `ragged_spec` (it has no YAML: set after composing)."""
    from hydra import compose, initialize_config_dir
    from omegaconf import open_dict

    from aim.paths import CONF_DIR

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=list(overrides))
    with open_dict(cfg):
        cfg.merger = {"name": "ragged_spec", "k": k}
    return cfg


def test_the_analytic_model_and_aim_flops_take_a_clip_reducer_s_kept_total(registered):
    from aim.config import validate
    from aim.efficiency.analytic import llm_prefill_flops
    from aim.efficiency.cost import flops, model_configs

    valid = validate(composed_with_ragged("model=llava_onevision_7b", "dataset.num_frames=32", "pruner=none"))
    result = flops(valid)
    kept = Ragged(k=3).kept_total(32, 196)
    assert kept == 11 * 3 + 10 * 6  # frames 1, 4, ... keep 3; 2, 5, ... keep 6; 0, 3, ... none
    assert result["visual_tokens"] == kept and result["tokens_per_layer"] == [kept + result["text_tokens"]] * 28
    text_config = model_configs(valid.model)[0].text_config
    assert result["tflops_analytic"] * 1e12 == pytest.approx(llm_prefill_flops(text_config, result["tokens_per_layer"]))


def test_budget_planning_costs_a_clip_reducer_by_its_kept_total(registered):
    from aim.budget import BudgetPlan, Setting
    from aim.config import validate

    plan = BudgetPlan(validate(composed_with_ragged("model=llava_onevision_7b", "budget.tflops=15")), None, 100)
    cost = plan.model(32, 100).cost(Setting.of({"name": "ragged_spec", "k": 3}, {"name": "none"}))
    assert cost.visual_tokens == Ragged(k=3).kept_total(32, 196)
    assert cost.tokens_per_layer == (cost.visual_tokens + 100,) * 28


def test_a_run_with_a_clip_reducer_records_each_frame_s_tokens(registered, small_benchmark, tmp_path):
    import json

    from aim import run as aim_run
    from aim.config import validate

    cfg = composed_with_ragged("model=llava_onevision_tiny", "dataset=video_mcq", f"dataset.root={small_benchmark}",
                               "dataset.num_frames=4", "dataset.limit=2", "pruner=none", "logger=none",
                               "eval.progress=false", k=2)
    summary = aim_run.run(cfg, validate(cfg), tmp_path / "run")
    assert summary["visual_tokens_per_frame"] == [0, 2, 4, 0]
    records = [json.loads(line) for line in (tmp_path / "run" / "samples.jsonl").read_text().splitlines()]
    assert len(records) == 2
    for r in records:
        assert r["visual_tokens_per_frame"] == [0, 2, 4, 0] and r["visual_tokens"] == 6
        assert r["tokens_per_layer"] == [6 + r["text_tokens"]] * 4


@pytest.mark.parametrize("model_name,frames,counts", [("toy_llava_ov", 4, [0, 2, 4, 0]),
                                                      ("qwen3_vl_tiny", 8, [0, 2, 4, 0])])
def test_aim_bench_reduces_through_the_clip_seam_and_reports_each_frame_s_tokens(registered, model_name, frames,
                                                                                counts):
    from aim.bench import bench
    from aim.config import validate

    valid = validate(composed_with_ragged(f"model={model_name}", "pruner=none", f"bench.frames={frames}",
                                          "bench.repeats=1", "bench.warmup=0", "bench.text_tokens=20", k=2))
    result = bench(valid)
    assert result["visual_tokens_per_frame"] == counts and result["visual_tokens_merged"] == sum(counts)
    assert result["flops_ratio"] > 1
