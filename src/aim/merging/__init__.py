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
same count.

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

MERGERS = Registry("merger")


@dataclass
class Merged:
    features: torch.Tensor  # [F, T', D]
    token_index: torch.Tensor  # [F, T'] long, original within-frame index of each kept token
    carry: torch.Tensor | None = None  # [F, T', C]: the `carry` channels, merged alike (None without one)


@dataclass
class ClipReduced:
    """A clip's kept tokens as one sequence (what a clip-level reducer returns; frames may keep different
    counts, some none): token n is `features[n]`, standing at within-frame position `token_index[n]` of frame
    `frame[n]`. Tokens come frame by frame (`frame` non-decreasing); a token merged across frames stands at
    one representative's (frame, index), which the reducer's docstring names."""

    features: torch.Tensor  # [N, D]
    frame: torch.Tensor  # [N] long
    token_index: torch.Tensor  # [N] long
    carry: torch.Tensor | None = None  # [N, C]: the `carry` channels, reduced alike

    def counts(self, frames: int) -> list[int]:
        """Kept tokens of each of the clip's `frames` frames."""
        return torch.bincount(self.frame.cpu(), minlength=frames).tolist()

    def per_frame(self, frames: int) -> list[Merged]:
        """Frame by frame, each a `Merged` of one frame ([1, K_f, D], [1, K_f]; K_f may be 0)."""
        out, start = [], 0
        for k in self.counts(frames):
            part = slice(start, start + k)
            carry = None if self.carry is None else self.carry[part][None]
            out.append(Merged(self.features[part][None], self.token_index[part][None], carry))
            start += k
        return out


def clip_of(merged: Merged) -> ClipReduced:
    """A per-frame merger's result [F, T', D] as a clip's: every frame keeps T' tokens."""
    f, t, d = merged.features.shape
    frame = torch.arange(f, device=merged.features.device).repeat_interleave(t)
    carry = None if merged.carry is None else merged.carry.reshape(f * t, -1)
    return ClipReduced(merged.features.reshape(f * t, d), frame, merged.token_index.reshape(-1), carry)


def reduce_clip(merger, features: torch.Tensor, **signals) -> ClipReduced:
    """Any merger as a clip reducer: one whose `scope` is "clip" returns `ClipReduced` itself; a per-frame
    merger (the default `scope`, "frame") is called as always and its result flattened (`clip_of`)."""
    out = merger(features, **signals)
    return out if getattr(merger, "scope", "frame") == "clip" else clip_of(out)


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


from aim.merging import baselines, bipartite, diversity, downsample, dycoke, fastvid, prumerge, prunevid, vidcom2, visionzip  # noqa: E402,F401  (register them)
