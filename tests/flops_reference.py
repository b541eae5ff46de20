"""The check every model adapter's tests make of its FLOP counts: fvcore on the real LLM prefill agrees with
the analytic model (aim.efficiency.analytic) at the tokens each layer saw, unpruned and pruned."""
from __future__ import annotations

import pytest

from aim.efficiency.analytic import llm_prefill_flops
from aim.efficiency.fvcore_count import count_llm_prefill
from aim.pruning import PRUNERS


def assert_fvcore_matches_analytic(adapter, inputs, pruners=(("none", {}), ("aim", {"l1": 2, "l2": 4}))) -> None:
    """For each (pruner name, fields): fvcore's LLM prefill FLOPs within 1% of the analytic count."""
    for name, fields in pruners:
        counted = count_llm_prefill(adapter, inputs, PRUNERS.build(name, **fields))
        visual = counted["visual_tokens_per_layer"] or [inputs.visual_tokens] * adapter.num_layers  # empty: none pruned
        per_layer = [inputs.text_tokens + v for v in visual]
        assert counted["llm_prefill_flops"] == pytest.approx(llm_prefill_flops(adapter.text_config, per_layer), rel=0.01), name
