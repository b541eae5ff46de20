"""FLOPs and timing. For now an analytic count of the LLM prefill from the architecture and the actual
per-layer token counts; fvcore counting and the roofline model come with the efficiency issue."""
