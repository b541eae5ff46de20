"""What every adapter with its own video layout does, checked alike on each one's tiny random model
(Qwen2-VL, Qwen2.5-VL, Qwen3-VL, InternVL3): merged tokens keep their own positions and the text does not
move; a keep-all schedule is bit-exact; pruning equals the masked reference; cached greedy decoding after a
pruned prefill equals recomputation; fvcore's counts agree with the analytic model; the evaluation loop and
aim.bench run merging and pruning through it. What is particular to one model (its Hugging Face reference,
its position rules, DeepStack, its processor) is checked in that model's own test module.

Each model's clip holds two merger groups: 4 frames for the Qwen models (a temporal patch is 2 frames of 7x7
tokens), 2 for InternVL (a frame is one group of 8x8 tokens)."""
from dataclasses import dataclass
from typing import Callable

import pytest
import torch
from hydra import compose, initialize_config_dir

from aim.config import validate
from aim.merging import MERGERS, NoMerge, kept_tokens
from aim.models import VISUAL
from aim.paths import CONF_DIR
from aim.pruning import PRUNERS
from aim.pruning.hooks import TokenPruner
from tests.flops_reference import assert_fvcore_matches_analytic
from tests.pruning_reference import masked_greedy_ids, masked_logits
from tests.tiny_models import ATTENTION, OPTIONS, QUESTION, KeepEven, build, frames


def toy_tokens(text):
    from transformers import AutoTokenizer

    from aim.models.base import resolve_pretrained

    return AutoTokenizer.from_pretrained(resolve_pretrained("aim:toy_llava_ov")).tokenize(text)


@dataclass(frozen=True)
class Case:
    preset: str
    frames_per_group: int  # frames in one merger group: a Qwen temporal patch holds 2, an InternVL frame 1
    tokens: int  # visual tokens per group, unmerged
    positions_in_order: bool = False  # the kept tokens laid out in position order (InternVL's 1-D positions)
    # the mergers the evaluation-loop test runs (Qwen3-VL: those that ask for the tower's signals)
    eval_mergers: tuple = (("aim", {"ratio": 0.25}),)
    bench_text_tokens: Callable[[], int] | None = None  # aim.bench's text tokens for 20 prompt tokens (None: unchecked)

    def groups(self, num_frames: int) -> int:
        return -(-num_frames // self.frames_per_group)

    def clip(self):
        """The frames of two merger groups."""
        return frames(2 * self.frames_per_group)


CASES = {
    "qwen2_vl": Case("qwen2_vl_tiny", 2, 49, bench_text_tokens=lambda: 20),
    "qwen2_5_vl": Case("qwen2_5_vl_tiny", 2, 49, bench_text_tokens=lambda: 20),
    # each temporal patch's timestamp text and its vision_start / vision_end markers on top of the prompt
    "qwen3_vl": Case("qwen3_vl_tiny", 2, 49,
                     eval_mergers=(("aim", {"ratio": 0.25, "metric": "keys"}), ("prumerge_plus", {"ratio": 0.25})),
                     bench_text_tokens=lambda: 20 + 2 * (len(toy_tokens("<0.2 seconds>")) + 2)),
    "internvl": Case("internvl3_tiny", 1, 64, positions_in_order=True),
}
PRESETS = [(name, case.preset) for name, case in CASES.items()]


def case_of(adapter) -> Case:
    return CASES[adapter.cfg.name]


@pytest.fixture(scope="module", params=[(p, a) for _, p in PRESETS for a in ATTENTION],
                ids=[f"{n}-{a}" for n, _ in PRESETS for a in ATTENTION])
def adapter(request):
    preset, attention = request.param
    return build(preset, [f"model.attn_implementation={attention}"])


@pytest.fixture(scope="module", params=[p for _, p in PRESETS], ids=[n for n, _ in PRESETS])
def sdpa_adapter(request):
    return build(request.param)


def test_kept_tokens_keep_their_own_positions_and_text_does_not_move(sdpa_adapter):
    """A merged token stands at the position (every M-RoPE axis) of the token the merger keeps for it, in the
    merger's order (InternVL: in position order); every other token keeps its position and role."""
    ad, case = sdpa_adapter, case_of(sdpa_adapter)
    full = ad.prepare(case.clip(), QUESTION, OPTIONS, NoMerge())
    axes = full.position_ids.shape[0] if full.position_ids.dim() == 3 else 1  # M-RoPE [3, 1, N]; InternVL [1, N]

    def positions(x, visual=True):  # [axes, tokens] of the visual tokens, or of all the others
        return x.position_ids.reshape(axes, -1)[:, (x.token_roles == VISUAL) == visual]

    for merger in (KeepEven(), MERGERS.build("aim", ratio=0.25)):
        merged = ad.prepare(case.clip(), QUESTION, OPTIONS, merger)
        index = merger(ad.encode_frames(ad.pixel_values(case.clip()))["features"]).token_index
        full_visual = positions(full).view(axes, 2, case.tokens)
        expected = torch.stack([full_visual[:, g, index[g]] for g in range(2)], 1).reshape(axes, -1)
        if case.positions_in_order:
            expected = expected.sort().values
        assert torch.equal(positions(merged), expected)
        assert torch.equal(positions(merged, visual=False), positions(full, visual=False))
        assert torch.equal(merged.token_roles[merged.token_roles != VISUAL], full.token_roles[full.token_roles != VISUAL])
    assert merged.visual_tokens == 2 * kept_tokens(case.tokens, 0.25)


def test_a_keep_all_schedule_is_bit_exact(adapter):
    inputs = adapter.prepare(case_of(adapter).clip(), QUESTION, OPTIONS, MERGERS.build("aim", ratio=0.5))
    plain = adapter.prefill_logits(inputs)
    with TokenPruner(adapter.decoder_layers, PRUNERS.build("aim", l1=4, l2=5)).attached(inputs.token_roles):
        hooked = adapter.prefill_logits(inputs)  # l1 >= 4 layers: no layer prunes
    assert torch.equal(hooked, plain)


def test_pruning_removes_tokens_and_equals_the_masked_reference(adapter):
    """Tokens physically removed from layer 2 on (Qwen3-VL: after its last DeepStack addition) give the logits
    of the whole sequence with those tokens masked from their layer on, under the model's own positions."""
    case = case_of(adapter)
    inputs = adapter.prepare(case.clip(), QUESTION, OPTIONS, MERGERS.build("aim", ratio=0.5))
    with TokenPruner(adapter.decoder_layers, PRUNERS.build("aim", l1=2, l2=4)).attached(inputs.token_roles) as trace:
        pruned = adapter.prefill_logits(inputs)
    visual = 2 * kept_tokens(case.tokens, 0.5)
    assert trace.visual_tokens_per_layer == [visual, visual, visual // 2, 0]
    reference = masked_logits(adapter, inputs.inputs_embeds, inputs.position_ids, trace.kept_indices,
                              len(inputs.token_roles), **inputs.llm_kwargs)
    torch.testing.assert_close(pruned, reference, atol=1e-4, rtol=1e-4)


def test_cached_greedy_decoding_after_a_pruned_prefill_equals_recomputation(adapter):
    """Decoding continues the positions (on every M-RoPE axis); each cached step gives the token that
    recomputing the whole sequence (pruned tokens masked from their layer on) gives."""
    inputs = adapter.prepare(case_of(adapter).clip(), QUESTION, OPTIONS, KeepEven())  # gaps in the positions too
    with TokenPruner(adapter.decoder_layers, PRUNERS.build("aim", l1=2, l2=4)).attached(inputs.token_roles) as trace:
        ids = adapter.generate_ids(inputs, max_new_tokens=4)
    further = None
    if "visual_pos_masks" in inputs.llm_kwargs:  # Qwen3-VL's DeepStack
        visual = inputs.llm_kwargs["visual_pos_masks"]

        def further(length):  # the visual positions stay those of the prefill; decoded tokens are text
            return {"visual_pos_masks": torch.cat([visual, visual.new_zeros(1, length - visual.shape[1])], 1),
                    "deepstack_visual_embeds": inputs.llm_kwargs["deepstack_visual_embeds"]}

    assert ids == masked_greedy_ids(adapter, inputs, trace.kept_indices, len(ids), further)


def test_fvcore_counts_agree_with_the_analytic_model(sdpa_adapter):
    inputs = sdpa_adapter.prepare(case_of(sdpa_adapter).clip(), QUESTION, OPTIONS, MERGERS.build("aim", ratio=0.5))
    assert_fvcore_matches_analytic(sdpa_adapter, inputs)


def test_merging_and_pruning_end_to_end_through_the_evaluation_loop(sdpa_adapter, small_benchmark, tmp_path):
    from aim.data import VideoMCQDataset
    from aim.eval import evaluate
    from aim.tracking.records import SampleRecords

    case = case_of(sdpa_adapter)
    for name, fields in case.eval_mergers:
        records = SampleRecords(tmp_path / f"{name}.jsonl")
        evaluate(sdpa_adapter, VideoMCQDataset(small_benchmark, num_frames=4, limit=2), MERGERS.build(name, **fields),
                 PRUNERS.build("aim", l1=2, l2=4), records, mode="letter", progress=False)
        records.close()
        assert len(records.records) == 2
        for r in records.records:
            assert r["prediction"] in "ABCD"
            visual = r["visual_tokens"]
            assert r["visual_tokens_per_layer"] == [visual, visual, visual // 2, 0]
            assert r["tflops"] == pytest.approx(r["tflops_analytic"], rel=0.01)
            assert r["vision_tower_tflops"] > 0 and r["merge_tflops"] > 0 and r["importance_tflops"] > 0
            if name == "aim":  # 25% of each group's tokens kept
                assert visual == case.groups(4) * kept_tokens(case.tokens, 0.25)


def test_samples_share_a_prefill_unless_the_adapter_prefills_alone(sdpa_adapter, small_benchmark, tmp_path):
    """`batched_prefill` (what aim.config reads to refuse eval.batch_size > 1 as unread) is False exactly where a
    prefill carries further LLM inputs (Qwen3-VL's DeepStack), and the loop batches as it says."""
    from aim.data import VideoMCQDataset
    from aim.eval import evaluate
    from aim.tracking.records import SampleRecords

    inputs = sdpa_adapter.prepare(case_of(sdpa_adapter).clip(), QUESTION, OPTIONS, MERGERS.build("aim", ratio=0.5))
    assert sdpa_adapter.batched_prefill == (not inputs.llm_kwargs)
    records = SampleRecords(tmp_path / "samples.jsonl")
    evaluate(sdpa_adapter, VideoMCQDataset(small_benchmark, num_frames=4, limit=2), MERGERS.build("aim", ratio=0.25),
             PRUNERS.build("aim", l1=2, l2=4), records, progress=False, batch_size=2)
    records.close()
    assert [r["batch_size"] for r in records.records] == [2 if sdpa_adapter.batched_prefill else 1] * 2


@pytest.mark.parametrize("name", CASES)
def test_bench_times_the_model_on_its_token_grid(name):
    from aim.bench import bench

    case = CASES[name]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        valid = validate(compose("config", overrides=[f"model={case.preset}", "merger=aim", "merger.ratio=0.25",
                                                      "pruner=aim", "pruner.l1=2", "pruner.l2=4", "bench.frames=4",
                                                      "bench.repeats=1", "bench.warmup=0", "bench.text_tokens=20"]))
    result = bench(valid)
    # 4 frames of 112 px (the presets' frame_size): 2 Qwen temporal patches of 7x7 tokens or 4 InternVL frames
    # of 8x8, a quarter of each group's tokens kept
    groups, merged = case.groups(4), case.groups(4) * kept_tokens(case.tokens, 0.25)
    assert (result["visual_tokens"], result["visual_tokens_merged"]) == (groups * case.tokens, merged)
    assert result["visual_tokens_per_layer"] == [merged, merged, merged // 2, 0]
    assert result["prefill_ms"] > 0 and result["flops_ratio"] > 1
    if case.bench_text_tokens is not None:
        assert result["text_tokens"] == case.bench_text_tokens()
