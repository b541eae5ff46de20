"""The cost model: analytic FLOPs of the LLM prefill (analytic), its roofline time (roofline), the tokens each
layer sees for a configured model, merger and pruner (cost), and fvcore's measured count (fvcore_count)."""
