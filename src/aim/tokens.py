"""Token roles in the LLM sequence, shared by the model adapters (which lay the sequence out) and the pruning
hooks (which drop visual tokens): a leaf module, so the pruning family does not import the model family.

Text (prefix or question) is never pruned; PADDING marks the pad positions of a padded batch (never pruned,
never counted as a key by the importance scores).

The merger seam's results (`Merged`, a per-frame merger's; `ClipReduced`, a clip's kept tokens with their
(frame, within-frame index)) and `reduce_clip` live here too, beside the roles: the adapters place them and
the families import only leaves (aim.merging re-exports them and documents the seam).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

PREFIX_TEXT, VISUAL, QUESTION_TEXT, PADDING = 0, 1, 2, 3


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
