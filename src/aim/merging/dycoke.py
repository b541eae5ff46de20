"""DyCoke (Tao et al., CVPR 2025, "DyCoke: Dynamic Compression of Tokens for Fast Video Large Language
Models"), its first stage: temporal token merging (TTM) across frames, before the LLM."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from aim.checks import check_range
from aim.merging import MERGERS, ClipReduced

WINDOW = 4  # frames per TTM window (the paper's: two pairs, then the pairs' first frames)


@dataclass
class DycokeConfig:
    name: str = "dycoke"
    prune: float = 0.7  # K: fraction of a compared frame's tokens merged into the earlier frame's

    def __post_init__(self):
        check_range("prune", self.prune, 0, 1, high_open=True)


def compared_frames(frames: int) -> list[tuple[int, int]]:
    """(frame, the earlier frame it is compared with) of TTM over `frames` frames, in windows of 4 frames
    w, w+1, w+2, w+3: w+1 with w and w+3 with w+2 (adjacent pairs), then w+2 with w (the pairs' first
    frames). A last, shorter window compares what it has: 3 frames -> (w+1, w), (w+2, w); 2 -> (w+1, w)."""
    pairs = []
    for w in range(0, frames, WINDOW):
        pairs += [(f, e) for f, e in ((w + 1, w), (w + 3, w + 2), (w + 2, w)) if f < frames]
    return sorted(pairs)


def kept_per_frame_dycoke(frames: int, num_tokens: int, prune: float) -> list[int]:
    """Tokens each frame keeps: T in every frame compared with none, floor((1 - K) T) in the others (at
    least 1): 16 frames of 196 at K = 0.7 keep 196, 58, 58, 58 per window, 1480 of 3136 (47%)."""
    kept = max(1, math.floor((1 - prune) * num_tokens + 1e-9))
    compared = {f for f, _ in compared_frames(frames)}
    return [kept if f in compared else num_tokens for f in range(frames)]


@MERGERS.register("dycoke", config=DycokeConfig)
class Dycoke:
    """DyCoke's temporal token merging (TTM, the paper's first stage), a clip reducer (`scope` "clip").

    The clip's frames are taken in windows of 4 (`compared_frames`). A compared frame t is matched with its
    earlier frame e token by token at the same within-frame position i, by cosine similarity

        s_i = cos(x_t,i , x_e,i)

    and its K * T most similar tokens are merged away into e's token at the same position: it keeps the
    floor((1 - K) T) tokens of lowest s_i (at least 1), in their original order. Both comparisons use the
    frames' original tokens (frame w+2 is compared with w as it came from the tower, as w+3 with w+2). The
    frames compared with none (the first of each window) keep all T tokens, so a clip of whole windows keeps
    about (1 + 3 (1 - K)) / 4 of its tokens (47% at K = 0.7) and never less than a quarter. Default K = 0.7
    (the official evaluation's `dycoke_k`). The official code keeps a merged-away token's partner unchanged
    (no average), and so does this: a token merged away is dropped and the earlier frame's token at its
    position stands for both, at its own (frame, index). The kept tokens are not averaged, so the
    `carry` is kept alike.

    Where this differs from the official code (`dycole_ttm` of KD-TAO/DyCoke): there, the last full window
    of 4 frames skips its w+2 vs w comparison (its loop stops at frames - 4), an odd last frame is dropped
    and 4 frames or fewer fail; here every window is treated alike and no frame is lost. Its kept tokens
    come in order of similarity; here in position order (the same set).

    Scoring cost: one T-long dot product of D channels per compared frame (2 D T FLOPs each; einsum, so
    fvcore counts it in `merge_flops`). DyCoke's second stage, KV-cache pruning while decoding, is the pruner
    `dycoke` (aim.pruning.decoding): `merger=dycoke pruner=dycoke eval.mode=generate` is the whole method."""

    scope = "clip"
    needs = ()

    def __init__(self, prune: float = 0.7, name: str = "dycoke"):
        self.prune = prune

    def kept_total(self, frames: int, num_tokens: int, grid=None) -> int:
        """Visual tokens kept of `frames` frames of `num_tokens` each, from the config alone."""
        return sum(kept_per_frame_dycoke(frames, num_tokens, self.prune))

    def __call__(self, features: torch.Tensor, metric=None, attention=None, carry=None) -> ClipReduced:
        f, t, d = features.shape
        counts = kept_per_frame_dycoke(f, t, self.prune)
        keep = [torch.arange(t, device=features.device) for _ in range(f)]
        pairs = compared_frames(f)
        if pairs:
            later, earlier = (torch.tensor(x, device=features.device) for x in zip(*pairs))
            unit = F.normalize(features.float(), dim=-1)
            similarity = torch.einsum("ptd,ptd->pt", unit[later], unit[earlier])  # [pairs, T]
            for p, frame in enumerate(later.tolist()):
                keep[frame] = similarity[p].topk(counts[frame], largest=False).indices.sort().values
        frame = torch.cat([torch.full((len(k),), i, device=features.device) for i, k in enumerate(keep)])
        index = torch.cat(keep)
        return ClipReduced(features[frame, index], frame, index, None if carry is None else carry[frame, index])
