"""Downsampling controls (VTC-Bench's finding that plain downsampling beats many token-reduction methods):
fewer frames, or a lower resolution per frame, at the visual-token count of the method compared, so every
study can run this control beside it (`merger=downsample`, `mode=frames|resolution`, `ratio`)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from aim.checks import check_choice, check_range
from aim.merging import MERGERS, ClipReduced, clip_of
from aim.merging.baselines import PoolMerger, token_grid

DOWNSAMPLE_MODES = ("frames", "resolution")


@dataclass
class DownsampleConfig:
    name: str = "downsample"
    mode: str = "frames"  # frames: keep whole frames; resolution: every frame's token grid pooled smaller
    ratio: float = 0.25  # fraction of the clip's visual tokens kept

    def __post_init__(self):
        check_choice("mode", self.mode, DOWNSAMPLE_MODES)
        check_range("ratio", self.ratio, 0, 1, low_open=True)


def kept_frames(frames: int, ratio: float) -> int:
    """Whole frames kept of `frames` at `ratio`: the fewest whose tokens reach the ratio of the clip's,
    n = ceil(ratio * F) (at least 1): 16 frames keep 4 at 0.25 and 2 at 0.1 (12.5% of the tokens)."""
    return max(1, math.ceil(ratio * frames - 1e-9))


def uniform_frames(frames: int, kept: int) -> list[int]:
    """`kept` of `frames` frames spread uniformly: the frame at the centre of each of `kept` equal segments,
    i_k = floor((2k + 1) F / (2n)) (the rule aim.data.video samples a video's frames by): 16 -> 4 keeps
    2, 6, 10, 14; `kept` = `frames` keeps every frame."""
    return [(2 * k + 1) * frames // (2 * kept) for k in range(kept)]


@MERGERS.register("downsample", config=DownsampleConfig)
class Downsample:
    """The downsampling control, a clip reducer (`scope` "clip") keeping about `ratio` of the clip's tokens.

    mode=frames: keep n = ceil(ratio * F) whole frames (at least 1), uniformly spaced (`uniform_frames`),
    every kept frame with all its tokens at their own (frame, index). The merger's frames are the adapter's
    groups: one frame for LLaVA-OneVision and InternVL3, one temporal patch (2 frames) for Qwen2-VL,
    Qwen2.5-VL and Qwen3-VL. Each group goes through the vision tower on its own in all of them (SigLIP /
    InternViT per frame; Qwen's tower attends within one temporal patch), so the kept groups' visual tokens
    are exactly those a run sampling only those frames would give. The LLM input still differs from such a
    run in two ways: kept tokens keep their positions in the full clip (1D, or Qwen's (t, h, w) M-RoPE, i.e.
    the frames' original times), and the text the adapter puts around each frame (InternVL3's frame labels,
    Qwen3-VL's timestamps) stays for the frames that keep no token.

    mode=resolution: every frame's rows x cols token grid average-pooled (area interpolation) to the nearest
    grid of the ratio, exactly as `merger=pool` (`PoolMerger`: h = round(rows * sqrt(ratio)), w =
    round(floor(ratio * rows * cols) / h)); a pooled token stands at the original position nearest its
    cell's centre. Needs the adapter's grid (without one the frame's tokens must form a square).

    ratio=1 keeps every token unchanged in both modes. The `carry` is reduced alike (the same frames, or the
    same pooling)."""

    scope = "clip"

    def __init__(self, mode: str = "frames", ratio: float = 0.25, name: str = "downsample"):
        self.mode, self.ratio = mode, ratio
        self.needs = ("grid",) if mode == "resolution" else ()

    def kept_total(self, frames: int, num_tokens: int, grid: tuple[int, int] | None = None) -> int:
        """Visual tokens kept of `frames` frames of `num_tokens` each (`grid`: their rows x cols, default a
        square), from the config alone: n whole frames, or every frame's pooled grid."""
        if self.mode == "resolution":
            h, w = PoolMerger(ratio=self.ratio).output_grid(*token_grid(num_tokens, grid))
            return frames * h * w
        return kept_frames(frames, self.ratio) * num_tokens

    def __call__(self, features: torch.Tensor, metric=None, attention=None, grid=None, carry=None) -> ClipReduced:
        if self.mode == "resolution":
            return clip_of(PoolMerger(ratio=self.ratio)(features, grid=grid, carry=carry))
        f, t, d = features.shape
        keep = torch.tensor(uniform_frames(f, kept_frames(f, self.ratio)), device=features.device)
        frame = keep.repeat_interleave(t)
        index = torch.arange(t, device=features.device).repeat(len(keep))
        return ClipReduced(features[keep].reshape(-1, d), frame, index,
                           None if carry is None else carry[keep].reshape(len(keep) * t, -1))
