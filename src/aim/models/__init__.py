"""Model adapters over Hugging Face classes: load or build the model, turn a Sample into LLM inputs
(`inputs_embeds`, position ids, token roles), name the decoder layers, and run the LLM prefill."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from aim.registry import Registry
from aim.tokens import PADDING, PREFIX_TEXT, QUESTION_TEXT, VISUAL  # noqa: F401  (the adapters import them here)

MODELS = Registry("model")


@dataclass
class PreparedInputs:
    """One sample, ready for the LLM prefill."""

    inputs_embeds: torch.Tensor  # [1, N, D]
    # [1, N], or [3, 1, N] for a multi-axis RoPE (Qwen2-VL: temporal, height, width); kept visual tokens
    # keep their original positions
    position_ids: torch.Tensor
    token_roles: torch.Tensor  # [N] int8: PREFIX_TEXT, VISUAL or QUESTION_TEXT
    # Further keyword arguments of the LLM's prefill call (Qwen3-VL: its DeepStack features and the visual
    # positions they are added at); empty for most models. Decoding steps after the prefill take none.
    llm_kwargs: dict = field(default_factory=dict)
    # Kept visual tokens of each merger group (a video's frames or temporal patches, an image's tiles or crops),
    # in order: ragged for a clip reducer (a group may keep none); what records list per frame.
    visual_per_group: list[int] = field(default_factory=list)

    @property
    def visual_tokens(self) -> int:
        return int((self.token_roles == VISUAL).sum())

    @property
    def text_tokens(self) -> int:
        return int((self.token_roles != VISUAL).sum())


from aim.models import internvl, llava, llava_onevision, qwen2_vl, qwen2_5_vl, qwen3_vl  # noqa: E402,F401  (register the adapters)
