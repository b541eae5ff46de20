"""The analytic LLM-prefill count reproduces the paper's LLaVA-OneVision-7B figures (32 frames x 196
tokens + 100 text tokens, Qwen2-7B), within 0.5%."""
import pytest
from transformers import Qwen2Config

from aim.efficiency.analytic import llm_prefill_flops
from aim.pruning.schedule import aim_schedule, kept_per_layer

QWEN2_7B = Qwen2Config(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
                       num_key_value_heads=4, vocab_size=152064)


def tokens_per_layer(visual, text, retention):
    return [text + v for v in kept_per_layer(visual, retention)]


@pytest.mark.parametrize(
    "visual,retention,paper_tflops",
    [
        (32 * 196, [1.0] * 28, 99.63),  # unreduced
        (32 * 98, [1.0] * 28, 46.48),  # 50% merging only
        (32 * 49, aim_schedule(28, 14, 22), 14.76),  # 25% merging, l1=14, l2=22
    ],
)
def test_paper_llava_onevision_7b_prefill_tflops(visual, retention, paper_tflops):
    tflops = llm_prefill_flops(QWEN2_7B, tokens_per_layer(visual, 100, retention)) / 1e12
    assert tflops == pytest.approx(paper_tflops, rel=0.005)


def test_token_counts_follow_the_retention_schedule_and_keep_all_text():
    assert tokens_per_layer(1568, 100, aim_schedule(28, 14, 22))[12:23] == [1668, 1668, 1472, 1276, 1080, 884, 688, 492, 296, 100, 100]


def test_one_prefill_cost_totals_a_prefill_for_aim_flops_and_for_budget_grids():
    """PrefillCost is the one place a prefill is totalled: per operator (`estimate`, what aim.flops reports, the
    paper's 14.76 TFLOPs setting), memoized per layer (`total`, budget mode's settings) and over many settings at
    once (`totals`, budget mode's grid); the three add the same operators and agree to float rounding."""
    import numpy as np

    from aim.efficiency.cost import PrefillCost
    from aim.efficiency.roofline import hardware_profile

    cost = PrefillCost(QWEN2_7B, hardware_profile("a100_40gb"), fused_attention=False)
    reduced = tokens_per_layer(32 * 49, 100, aim_schedule(28, 14, 22))
    full = [32 * 196 + 100] * 28
    est = cost.estimate(reduced)
    tflops, ms, tflops_analytic = cost.total(reduced)
    assert round(est.tflops, 2) == 14.76 and round(cost.estimate(full).tflops, 2) == 99.63
    assert (tflops, ms) == pytest.approx((est.tflops, est.prefill_ms), rel=1e-12)
    assert tflops_analytic * 1e12 == llm_prefill_flops(QWEN2_7B, reduced)  # the matmuls alone, runs' tflops_analytic
    many_tflops, many_ms = cost.totals(np.array([reduced, full]))
    assert many_tflops.tolist() == pytest.approx([tflops, cost.total(full)[0]], rel=1e-12)
    assert many_ms.tolist() == pytest.approx([ms, cost.estimate(full).prefill_ms], rel=1e-12)
