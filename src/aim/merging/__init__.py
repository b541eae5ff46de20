"""Token mergers: per-frame features [F, T, D] -> [F, T', D], applied between the projector and the LLM.

A merger is called as `merger(features, metric=None, attention=None)`; the optional signals come from
the model adapter when the merger lists them in its `needs` (`metric`: the vision tower's keys of
each token; `attention`: the attention each token receives, e.g. from [CLS]; `grid`: (rows, cols) of
each frame's tokens in raster order, for mergers that work on the frame's 2D layout, e.g. pooling;
`text`: the LLM input embeddings [M, D] of the prompt after the visual tokens, for prompt-conditioned
mergers, e.g. CDPruner).
It returns `Merged(features, token_index)`: `token_index[f, j]` is the within-frame index of the
original token that kept token j stands for, so the LLM sees it at that original position. Mergers are
pure tensor code (no model, no config objects) and never mix tokens of different frames.

Clip-level reducers (`scope = "clip"`: temporal segmentation, merging a static region over frames,
per-frame budgets) take the same inputs and return `ClipReduced`: the kept tokens as one sequence, each
with the (frame, within-frame index) it stands at, frames keeping different counts. `reduce_clip` calls
either kind and gives a `ClipReduced`; a per-frame merger is the special case where every frame keeps the
same count. Every adapter calls its merger through `reduce_clip` and places a ragged result (each kept token
at its own (frame, index)'s unreduced position; a frame keeping none keeps its text). A clip reducer whose
kept total follows from its config defines `kept_total(frames, tokens_per_frame, grid)`: aim.flops and budget
planning count with it. These result types live in the leaf aim.tokens (the adapters import them there).

`carry` [F, T, C] (optional): more channels of the same tokens that are merged with exactly the groups and
weights of the features but take no part in choosing them (Qwen3-VL's DeepStack levels); returned as
`Merged.carry` [F, T', C]. Every merger is linear in the features once its choices are made, so each
applies its choices to the features and the carry side by side.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from aim.registry import Registry
# the seam's result types live in a leaf, where the adapters import them
from aim.tokens import ClipReduced, Merged, clip_of, reduce_clip  # noqa: F401

MERGERS = Registry("merger")


def with_carry(features: torch.Tensor, carry: torch.Tensor | None) -> torch.Tensor:
    """The features and the carry side by side [F, T, D + C], for a merger to merge alike."""
    return features if carry is None else torch.cat([features, carry.to(features.dtype)], -1)


def split_carry(merged: torch.Tensor, index: torch.Tensor, dim: int, carry: torch.Tensor | None) -> Merged:
    """`Merged` from merged [F, T', D + C] channels: the first `dim` are the features, the rest the carry."""
    if carry is None:
        return Merged(merged, index)
    return Merged(merged[..., :dim], index, merged[..., dim:].to(carry.dtype))


def kept_tokens(num_tokens: int, ratio: float) -> int:
    """Tokens kept per frame at `ratio` (the fraction kept): floor(ratio * T), at least 1.
    196 tokens keep 98 at 0.5 and 49 at 0.25."""
    return max(1, math.floor(ratio * num_tokens + 1e-9))


@dataclass
class NoMergeConfig:
    name: str = "none"


@MERGERS.register("none", config=NoMergeConfig)
class NoMerge:
    """The identity: every visual token reaches the LLM."""

    def __init__(self, name: str = "none"):
        self.name = name

    needs = ()

    def __call__(self, features: torch.Tensor, metric=None, attention=None, carry=None) -> Merged:
        f, t, _ = features.shape
        return Merged(features, torch.arange(t, device=features.device).expand(f, t), carry)


from aim.merging import baselines, bipartite, diversity, downsample, dycoke, fastvid, holitom, prumerge, prunevid, vidcom2, visionzip  # noqa: E402,F401  (register them)
