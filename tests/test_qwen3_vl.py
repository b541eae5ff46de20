"""The Qwen3-VL adapter: unreduced, it is the Hugging Face model (same logits with DeepStack, same interleaved
M-RoPE positions, the processor's timestamp text between temporal patches); every DeepStack level is merged
with the features' groups and weights; pruning before the last DeepStack addition is refused. Tiny random
models from the `qwen3_vl_tiny` preset (DeepStack from 2 tower blocks, added after LLM layers 0 and 1).
(Merging, pruning after that addition, decoding, FLOP counting, the evaluation loop and aim.bench on it, as on
every adapter: tests/test_adapter_contract.py.)"""
from dataclasses import replace

import pytest
import torch

from aim.config import ConfigError
from aim.merging import MERGERS, Merged, NoMerge, reduce_clip
from aim.models import PREFIX_TEXT, QUESTION_TEXT, VISUAL
from aim.models.qwen3_vl import Qwen3VLAdapter
from aim.pruning import PRUNERS
from aim.pruning.hooks import TokenPruner
from tests.hf_reference import qwen_hf_forward
from tests.tiny_models import OPTIONS, QUESTION, adapter_fixtures, build, frames, preset

adapter, sdpa_adapter = adapter_fixtures("qwen3_vl_tiny")


def layout_ids(ad, groups: int, tokens: int):
    """Input ids of the unmerged prompt as the processor lays a video out: per temporal patch, its timestamp
    text, vision_start, its video tokens, vision_end."""
    before, after = ad.prompt_text(QUESTION, OPTIONS)
    config = ad.model.config
    ids = ad.token_ids(before)
    for stamp in ad.timestamp_ids(groups):
        ids += stamp + [config.vision_start_token_id] + [config.video_token_id] * tokens + [config.vision_end_token_id]
    return ids + ad.token_ids(after)


def hf_reference(ad, video):
    """Logits at the last position and M-RoPE positions of Qwen3VLForConditionalGeneration (DeepStack
    included) given the processor's input ids and the processor-layout pixels."""
    inputs = ad.prepare(video, QUESTION, OPTIONS, NoMerge())
    groups = int(ad.hf_video_inputs(ad.pixel_values(video))[1][0, 0])
    return (inputs, *qwen_hf_forward(ad, layout_ids(ad, groups, inputs.visual_tokens // groups), video))


@pytest.mark.parametrize("num_frames", [2, 4, 5])  # 5: an odd count repeats the last frame
def test_unreduced_logits_and_positions_equal_the_hf_forward(adapter, num_frames):
    inputs, ref_logits, ref_positions = hf_reference(adapter, frames(num_frames))
    assert inputs.visual_tokens == -(-num_frames // 2) * 49  # 112 px, patch 8, 2x2 merger: 7x7 per frame pair
    assert torch.equal(inputs.position_ids, ref_positions)
    logits = adapter.prefill_logits(inputs)
    torch.testing.assert_close(logits, ref_logits, atol=1e-4, rtol=1e-4)
    deepstack = inputs.llm_kwargs["deepstack_visual_embeds"]
    assert len(deepstack) == 2 and deepstack[0].shape == (inputs.visual_tokens, 64)
    without = replace(inputs, llm_kwargs={})  # DeepStack really contributes
    assert not torch.allclose(adapter.prefill_logits(without), ref_logits, atol=1e-3)


def test_the_video_layout_and_timestamps_are_the_processor_s(sdpa_adapter):
    """The Hugging Face processor's text for a video of 6 frames at `fps` (timestamps: the mean of each
    temporal patch's first and last frame), tokenized, is the adapter's sequence: its text tokens embed to
    the adapter's, its video tokens stand where the adapter's visual tokens are, and Hugging Face's
    get_rope_index on it gives the adapter's positions."""
    from transformers import Qwen3VLProcessor
    from transformers.video_utils import VideoMetadata

    ad = Qwen3VLAdapter(sdpa_adapter.model, sdpa_adapter.tokenizer, replace(sdpa_adapter.cfg, fps=1.0))
    video = frames(6)
    inputs = ad.prepare(video, QUESTION, OPTIONS, NoMerge())
    grid = ad.hf_video_inputs(ad.pixel_values(video))[1]
    processor = Qwen3VLProcessor.__new__(Qwen3VLProcessor)  # its text expansion alone (no torchvision here)
    processor.video_processor = type("VideoProcessor", (), {"merge_size": 2, "temporal_patch_size": 2})()
    processor.video_token, processor.vision_start_token, processor.vision_end_token = "<video>", "<unk>", "<unk>"
    metadata = VideoMetadata(total_num_frames=6, fps=1.0, frames_indices=list(range(6)))
    expanded = processor.replace_video_token({"video_grid_thw": grid, "video_metadata": [metadata]}, 0)
    assert expanded.startswith("<0.5 seconds><unk><video><video>") and "<2.5 seconds><unk>" in expanded
    assert ad.group_seconds(3) == processor._calculate_timestamps(list(range(6)), 1.0, 2) == [0.5, 2.5, 4.5]
    before, after = ad.prompt_text(QUESTION, OPTIONS)
    ids = torch.tensor([ad.token_ids(before) + ad.token_ids(expanded) + ad.token_ids(after)])
    is_video = ids[0] == ad.model.config.video_token_id
    assert torch.equal(is_video, inputs.token_roles == VISUAL)
    with torch.no_grad():
        text = ad.model.model.get_input_embeddings()(ids)[0, ~is_video]
    assert torch.equal(inputs.inputs_embeds[0, ~is_video], text)
    positions, _ = ad.model.model.get_rope_index(ids, is_video[None].int() * 2, video_grid_thw=grid)
    assert torch.equal(inputs.position_ids, positions)


def test_the_timestamps_are_when_the_decoded_frames_were_shown(sdpa_adapter):
    """Given the decoded video's frame times (frames 0, 3, 6, ... of a 30 fps video, an odd count), the
    timestamps are the processor's for those frame indices and that fps, not frame i at i / model.fps; past
    `max_frames`, the times of the frames the model sees."""
    from transformers import Qwen3VLProcessor

    from aim.data.video import FrameTimes

    indices = [0, 3, 6, 9, 12]
    times = FrameTimes(seconds=[i / 30 for i in indices], sampled_fps=10.0)
    ad = sdpa_adapter
    processor = Qwen3VLProcessor.__new__(Qwen3VLProcessor)
    expected = processor._calculate_timestamps(indices, 30.0, 2)
    assert ad.group_seconds(3, times) == pytest.approx(expected) and expected != ad.group_seconds(3)
    assert ad.timestamp_ids(3, times) == [ad.token_ids(f"<{t:.1f} seconds>") for t in expected]
    inputs = ad.prepare(frames(5), QUESTION, OPTIONS, NoMerge(), frame_times=times)
    before, after = ad.prompt_ids(QUESTION, OPTIONS, "letter", "video")
    config = ad.model.config
    text_ids = list(before)
    for t in expected:
        text_ids += ad.token_ids(f"<{t:.1f} seconds>") + [config.vision_start_token_id, config.vision_end_token_id]
    assert torch.equal(inputs.inputs_embeds[0, inputs.token_roles != VISUAL], ad.embed_tokens(text_ids + list(after)))
    few = Qwen3VLAdapter(ad.model, ad.tokenizer, replace(ad.cfg, max_frames=2))
    assert few.group_seconds(1, times) == pytest.approx([(0 + 12 / 30) / 2])


@pytest.mark.parametrize("name,fields", [*[(name, {}) for name in MERGERS.names()],
                                         ("aim", {"ratio": 0.3, "averaging": "plain"}),
                                         ("downsample", {"mode": "resolution"})])
def test_every_merger_merges_the_carry_with_the_features_groups_and_weights(name, fields):
    """Every registered merger (per-frame or clip-level, both through `reduce_clip`): a carry that is a linear
    map of the features comes out as the same map of the merged features (each merged token is a fixed linear
    combination of its group's tokens), and the carry changes none of the choices."""
    g = torch.Generator().manual_seed(0)
    features = torch.randn(3, 49, 16, generator=g, dtype=torch.float64)
    signals = {"metric": torch.randn(3, 49, 8, generator=g, dtype=torch.float64),
               "attention": torch.rand(3, 49, generator=g, dtype=torch.float64), "grid": (7, 7),
               "text": torch.randn(5, 16, generator=g, dtype=torch.float64)}

    def run(carry=None):
        merger = MERGERS.build(name, **fields)
        needs = getattr(merger, "needs", ())
        return reduce_clip(merger, features, **{k: v for k, v in signals.items() if k in needs}, carry=carry)

    plain, carried = run(), run(torch.cat([2 * features, -features], -1))
    assert plain.carry is None
    assert torch.equal(carried.features, plain.features) and torch.equal(carried.token_index, plain.token_index)
    assert torch.equal(carried.frame, plain.frame)
    torch.testing.assert_close(carried.carry, torch.cat([2 * plain.features, -plain.features], -1), atol=1e-6, rtol=1e-6)  # pool: fp32


def test_the_deepstack_levels_reaching_the_llm_are_merged_like_the_features(sdpa_adapter):
    ad = sdpa_adapter
    merger = MERGERS.build("aim", ratio=0.25)
    inputs = ad.prepare(frames(4), QUESTION, OPTIONS, merger)
    encoded = ad.encode_frames(ad.pixel_values(frames(4)))
    levels = encoded["carry"].view(2, 49, 2, 64).unbind(2)  # 2 levels of [2 groups, 49, 64], side by side
    with torch.no_grad():
        tower = ad.model.model.visual(*ad.hf_video_inputs(ad.pixel_values(frames(4)))).deepstack_features
    for level, own, sent in zip(levels, tower, inputs.llm_kwargs["deepstack_visual_embeds"]):
        torch.testing.assert_close(level.reshape(-1, 64), own)
        torch.testing.assert_close(sent, merger(encoded["features"], carry=level).carry.reshape(-1, 64))
    assert torch.equal(inputs.llm_kwargs["visual_pos_masks"][0], inputs.token_roles == VISUAL)


def test_a_merger_without_a_carry_is_refused_by_name(sdpa_adapter):
    class Plain:
        def __call__(self, features, metric=None):
            return Merged(features, torch.arange(features.shape[1]).expand(features.shape[0], -1))

    with pytest.raises(ValueError, match="merger Plain takes no `carry`"):
        sdpa_adapter.prepare(frames(2), QUESTION, OPTIONS, Plain())


@pytest.mark.parametrize("pruner,field,layer", [(["pruner=aim", "pruner.l1=1", "pruner.l2=4"], "l1", 1),
                                                (["pruner=fastv", "pruner.k=1"], "k", 1),
                                                (["pruner=vtw", "pruner.k=1"], "k", 1)])
def test_a_schedule_pruning_before_the_last_deepstack_addition_is_refused(pruner, field, layer):
    preset("qwen3_vl_tiny", ["pruner=aim", "pruner.l1=2", "pruner.l2=4"])  # from layer 2 on: valid
    with pytest.raises(ConfigError, match=rf"pruner.{field}: .* prunes from decoder layer {layer}, .* from layer 2 on: its DeepStack"):
        preset("qwen3_vl_tiny", pruner)


def test_the_text_after_each_temporal_patch_starts_past_its_rows_and_columns(sdpa_adapter):
    inputs = sdpa_adapter.prepare(frames(4), QUESTION, OPTIONS, NoMerge())
    roles, positions = inputs.token_roles, inputs.position_ids[:, 0]
    visual = positions[:, roles == VISUAL].view(3, 2, 49)
    assert visual[0].amin(1).tolist() == visual[0].amax(1).tolist()  # one temporal position per patch
    first_end = int((roles == VISUAL).nonzero()[48]) + 1  # the vision_end after patch 0
    assert roles[first_end] == PREFIX_TEXT and positions[:, first_end].tolist() == [int(visual[0, 0, 0]) + 7] * 3
    assert roles[-1] == QUESTION_TEXT


def test_total_pixels_is_refused_qwen3_bounds_the_whole_video():
    with pytest.raises(Exception, match="total_pixels: Qwen3-VL bounds the whole video"):
        preset("qwen3_vl_tiny", ["model.total_pixels=100000"])


def test_the_importance_scores_see_the_attention_the_layer_computes():
    """`layer_qk` (the queries and keys every importance score uses) applies Qwen3's per-head RMSNorm of q
    and k (QK-norm) before RoPE, as the attention module does: its causal softmax is the eager attention's."""
    from aim.pruning.hooks import layer_qk

    ad = build("qwen3_vl_tiny", ["model.attn_implementation=eager"])
    inputs = ad.prepare(frames(2), QUESTION, OPTIONS, NoMerge())
    attn, captured = ad.decoder_layers[1].self_attn, {}
    pre = attn.register_forward_pre_hook(lambda m, a, k: captured.update(kwargs=k, hidden=a[0] if a else k["hidden_states"]),
                                         with_kwargs=True)
    post = attn.register_forward_hook(lambda m, a, out: captured.update(probs=out[1]))
    try:
        ad.prefill_logits(inputs)
    finally:
        pre.remove()
        post.remove()
    with torch.no_grad():
        q, k = layer_qk(attn, captured["hidden"], captured["kwargs"]["position_embeddings"])
    n = q.shape[2]
    logits = (q @ k.transpose(-1, -2)) * attn.scaling + torch.full((n, n), float("-inf")).triu(1)
    torch.testing.assert_close(logits.softmax(-1), captured["probs"], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name,hub_id,layers,hidden,heads,kv_heads,levels", [
    ("qwen3_vl_8b", "Qwen/Qwen3-VL-8B-Instruct", 36, 4096, 32, 8, [8, 16, 24]),
    ("qwen3_vl_4b", "Qwen/Qwen3-VL-4B-Instruct", 36, 2560, 32, 8, [5, 11, 17]),
    ("qwen3_vl_2b", "Qwen/Qwen3-VL-2B-Instruct", 28, 2048, 16, 8, [5, 11, 17]),
])
def test_presets_hold_the_published_architectures(name, hub_id, layers, hidden, heads, kv_heads, levels):
    """360x640 video, 32 frames: the whole video (32 x 352 x 640 px) is within the processor's 25165824
    pixels, so frames keep 352x640 (multiples of 32) -> 11x20 tokens per temporal patch of 2 frames."""
    cfg = preset(name, ["pruner=aim"])  # the default (the bundled 4-layer model's l1=2) prunes before layer 3
    assert cfg.pretrained == hub_id and not cfg.random_init and cfg.chat_template
    hf = Qwen3VLAdapter.hf_config(cfg)  # from the stored architecture: nothing read from `pretrained`
    t = hf.text_config
    assert type(hf).__name__ == "Qwen3VLConfig" and t.rope_parameters["mrope_interleaved"]
    assert (t.num_hidden_layers, t.hidden_size, t.num_attention_heads, t.num_key_value_heads, t.head_dim) == (layers, hidden, heads, kv_heads, 128)
    assert list(hf.vision_config.deepstack_visual_indexes) == levels and hf.vision_config.patch_size == 16
    assert Qwen3VLAdapter.feature_grid(hf, cfg, 32) == (16, 11, 20)
    assert Qwen3VLAdapter.prunable_from(hf)[0] == 3


def test_flops_of_qwen3_vl_8b_count_the_timestamps_between_temporal_patches():
    """Timestamps 0.2 (0.25 s) .. 15.2 s: 10 of 6 tokens, 6 of 7 tokens, and vision_start/end per patch, on
    top of the prompt's 100 text tokens."""
    from hydra import compose, initialize_config_dir

    from aim.config import validate
    from aim.efficiency.cost import flops
    from aim.paths import CONF_DIR

    def run(*overrides):
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return flops(validate(compose("config", overrides=["model=qwen3_vl_8b", "dataset.num_frames=32", *overrides])))

    full = run("merger=none", "pruner=none")
    assert (full["frame_groups"], full["token_grid"], full["tokens_per_frame"]) == (16, [11, 20], 220)
    assert full["text_tokens"] == 100 + 10 * 6 + 6 * 7 + 16 * 2
    assert full["tokens_per_layer"] == [16 * 220 + 234] * 36
    reduced = run("merger=aim", "merger.ratio=0.25", "pruner=aim", "pruner.l1=14", "pruner.l2=22")
    assert reduced["visual_tokens"] == 16 * 55 and reduced["tokens_per_layer"][:14] == [16 * 55 + 234] * 14
    assert reduced["tokens_per_layer"][22:] == [234] * 14


def test_without_a_tokenizer_the_timestamps_are_stand_ins_as_many_as_aim_flops_counts(sdpa_adapter):
    """Random weights benchmarked where no tokenizer is cached (aim.bench): the sequence still has each
    patch's timestamp, as many tokens as `video_text_tokens` counts, and zero DeepStack levels."""
    ad = Qwen3VLAdapter(sdpa_adapter.model, None, sdpa_adapter.cfg)
    visual = torch.randn(3, 49, 64)
    inputs = ad.assemble([2, 5], visual, torch.arange(49).expand(3, -1), [6, 7, 8], (7, 7))
    assert inputs.visual_tokens == 3 * 49
    assert inputs.text_tokens == 5 + Qwen3VLAdapter.video_text_tokens(ad.model.config, ad.cfg, 3) == 5 + 3 * (6 + 2)
    assert all(not level.any() for level in inputs.llm_kwargs["deepstack_visual_embeds"])
    assert torch.isfinite(ad.prefill_logits(inputs)).all()


def test_the_resize_bounds_hold_the_whole_video_a_longer_one_gets_smaller_frames():
    """The processor's rule (its own smart_resize): 32 frames of 360x640 fit the 8B preset's 25165824 pixels
    at 352x640; 768 frames do not, and shrink to 128x224 (4x7 tokens per temporal patch)."""
    from transformers.models.qwen3_vl.video_processing_qwen3_vl import smart_resize

    cfg = preset("qwen3_vl_8b", ["pruner=none"])
    hf = Qwen3VLAdapter.hf_config(cfg)
    assert Qwen3VLAdapter.feature_grid(hf, cfg, 32) == (16, 11, 20)
    assert Qwen3VLAdapter.feature_grid(hf, cfg, 768) == (384, 4, 7)
    assert Qwen3VLAdapter.resized_size(hf.vision_config, cfg, 360, 640, 768) == smart_resize(768, 360, 640, 2, 32, 4096, 25165824)


def test_patch_layout_and_normalization_equal_the_hf_video_processor():
    """Frames already of a size the rule keeps (64x96, 16 px patches): the adapter's patches in the Hugging
    Face model's layout are the Qwen3-VL video processor's patchify of the frames normalized with mean = std
    = 0.5, an odd frame count repeating the last frame."""
    import numpy as np
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration
    from transformers.models.qwen3_vl.video_processing_qwen3_vl import Qwen3VLVideoProcessor

    from aim.models.qwen3_vl import Qwen3VLAdapterConfig

    hf_cfg = Qwen3VLConfig(vision_config=dict(depth=1, hidden_size=32, intermediate_size=32, num_heads=2, out_hidden_size=32,
                                              num_position_embeddings=16, deepstack_visual_indexes=[0]),
                           text_config=dict(hidden_size=32, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                                            num_key_value_heads=1, head_dim=16, vocab_size=16))
    ad = Qwen3VLAdapter(Qwen3VLForConditionalGeneration(hf_cfg), None,
                        Qwen3VLAdapterConfig(pretrained="", random_init=True, architecture={"x": 1}))
    video = (np.random.default_rng(0).random((3, 64, 96, 3)) * 255).astype(np.uint8)
    ours, grid = ad.hf_video_inputs(ad.pixel_values(video))
    x = (torch.from_numpy(video).permute(0, 3, 1, 2).float() / 255 - 0.5) / 0.5
    ref, t, h, w = Qwen3VLVideoProcessor.patchify(None, x[None], patch_size=16, merge_size=2, temporal_patch_size=2)
    assert grid.tolist() == [[t, h, w]] == [[2, 4, 6]]
    torch.testing.assert_close(ours, ref[0], atol=1e-6, rtol=1e-6)


def test_a_hook_pruning_before_the_last_deepstack_addition_fails_naming_the_layer(sdpa_adapter):
    """Without validation (the API): layer 1 pruned while DeepStack still adds after it."""
    inputs = sdpa_adapter.prepare(frames(4), QUESTION, OPTIONS, NoMerge())
    with TokenPruner(sdpa_adapter.decoder_layers, PRUNERS.build("aim", l1=1, l2=4)).attached(inputs.token_roles):
        with pytest.raises(ValueError, match=r"decoder layer 1 holds pruned tokens, .* DeepStack .* prune from layer 2 on"):
            sdpa_adapter.prefill_logits(inputs)


def test_budget_mode_never_chooses_a_schedule_pruning_before_the_last_deepstack_addition():
    """The policy's path and the whole grid stop at l1 = 3 on Qwen3-VL-8B (its DeepStack adds after layers
    0..2), and a budget only the strongest pruning meets gets l1 = 3, with merging going further."""
    from hydra import compose, initialize_config_dir

    from aim.budget import BudgetPlan, candidates, policy_order
    from aim.config import validate
    from aim.paths import CONF_DIR

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        valid = validate(compose("config", overrides=["model=qwen3_vl_8b", "dataset.num_frames=32", "merger=aim",
                                                      "pruner=aim", "budget.fraction=0.08", "budget.text_tokens=100"]))
    plan = BudgetPlan(valid)
    model = plan.model(plan.frames, plan.text_tokens)
    assert model.first_prunable == 3
    for settings in (policy_order(plan.merger, plan.pruner, 36, 3), candidates(plan.merger, plan.pruner, 36, 3)):
        l1s = {s.pruner["l1"] for s in settings if s.pruner["name"] == "aim"}
        assert min(l1s) == 3
    assert min(s.pruner.get("l1", 36) for s in policy_order(plan.merger, plan.pruner, 36)) == 1  # others: from 1
    chosen = plan.choice.setting
    assert chosen.pruner["name"] == "aim" and chosen.pruner["l1"] >= 3


def test_budget_mode_costs_a_setting_as_aim_flops_does_timestamps_included():
    from hydra import compose, initialize_config_dir

    from aim.budget import BudgetPlan
    from aim.config import validate
    from aim.efficiency.cost import flops
    from aim.paths import CONF_DIR

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        valid = validate(compose("config", overrides=["model=qwen3_vl_8b", "dataset.num_frames=32", "merger=aim",
                                                      "pruner=aim", "budget.tflops=12", "budget.text_tokens=100"]))
        plan = BudgetPlan(valid)
        knobs = plan.choice.setting.knobs()
        chosen = validate(compose("config", overrides=[
            "model=qwen3_vl_8b", "dataset.num_frames=32", "merger=aim", f"merger.ratio={knobs['merger']['ratio']}",
            "pruner=aim", f"pruner.l1={knobs['pruner'].get('l1', 36)}", f"pruner.l2={knobs['pruner'].get('l2', 37)}"]))
    assert plan.choice.cost.tflops == pytest.approx(flops(chosen)["tflops"], rel=1e-9)
    assert plan.choice.cost.tokens_per_layer[-1] == 100 + 134  # the last layer holds the text alone
