"""VidCom2 (Liu et al., "Video Compression Commander: Plug-and-Play Inference Acceleration for Video Large
Language Models", EMNLP 2025) as a clip-level reducer before the LLM: frames get budgets by their uniqueness
in the video, then each frame keeps its most distinctive tokens. Written from the paper, with the official
code (xuyang-liu16/VidCom2, llava/model/vidcom2.py) read to settle the details.

Of the clip's features x [F, T, D]:

- channels: the D' = floor(D / 2) channels of least variance over all F * T tokens (the official code's
  choice), each token then L2-normalized: z_{t,i} = x_{t,i}[C] / ||x_{t,i}[C]||;
- similarity to a center c by a multi-scale Gaussian kernel,
      K(z, c) = sum_{a in {1/8, 1/4, 1/2, 1, 2}} exp(-||z - c||^2 / (2a)),
  to the video's center c_v = mean_{t,i} z_{t,i} and to the frame's c_t = mean_i z_{t,i}:
      v_{t,i} = K(z_{t,i}, c_v),   f_{t,i} = K(z_{t,i}, c_t);
- frame compression adjustment: frame uniqueness u_t = -mean_i v_{t,i}; p = softmax(u / tau), tau = 0.01;
  frame t's share of the tokens is r (1 + p_t - 1/F) T (the shares sum to r F T). The clip keeps
  N = floor(r F T) tokens; the shares become integer budgets k_t <= T by largest remainders (the official
  code rounds each share and keeps at least one per frame, so its total drifts by a few tokens);
- adaptive token compression: frame t keeps its k_t tokens of least v_{t,i} + f_{t,i}, the ones least like
  the video and the frame (ties: the lowest position).

The paper's default keeps r = 25% of LLaVA-OneVision's tokens (`ratio`, the kept fraction of the clip);
ratio = 1 keeps every token unchanged. Nothing is merged: every kept token stands at its own (frame, index).
Scoring cost: z's products with the two centers, 2 F T D' multiply-adds (matrix products, counted by fvcore
as merge FLOPs; the variances, norms and exponentials are elementwise and not counted, as for every merger).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from aim.checks import check_range
from aim.merging import MERGERS, ClipReduced, kept_tokens, with_carry
from aim.merging.video import apportion, gather_clip

SCALES = (0.125, 0.25, 0.5, 1.0, 2.0)  # the kernel widths a: 2^-3 .. 2^1


def gaussian_similarity(z: torch.Tensor, center: torch.Tensor) -> torch.Tensor:
    """K(z, c) of tokens z [F, T, D'] and centers [F or 1, D'] -> [F, T]; the squared distance as
    |z|^2 - 2 z.c + |c|^2, its product a matrix product (fvcore counts it)."""
    cross = (z @ center.unsqueeze(-1).expand(z.shape[0], -1, -1)).squeeze(-1)  # [F, T]
    dist = ((z * z).sum(-1) - 2 * cross + (center * center).sum(-1, keepdim=True)).clamp_min(0)
    return sum(torch.exp(-dist / (2 * a)) for a in SCALES)


def vidcom2_scores(x: torch.Tensor, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Frame shares' softmax p [F] (of frame uniqueness) and token scores v + f [F, T] (lower: more distinct)."""
    f, t, d = x.shape
    flat = x.reshape(f * t, d).float() if x.dtype in (torch.float16, torch.bfloat16) else x.reshape(f * t, d)
    keep = flat.var(dim=0, unbiased=False).topk(d // 2 or 1, largest=False).indices.sort().values
    z = F.normalize(flat[:, keep], dim=-1).view(f, t, -1)
    video = gaussian_similarity(z, z.mean(dim=(0, 1))[None])
    frame = gaussian_similarity(z, z.mean(dim=1))
    uniqueness = -video.mean(dim=1)
    return torch.softmax((uniqueness - uniqueness.max()) / temperature, dim=0), video + frame


@dataclass
class VidCom2Config:
    name: str = "vidcom2"
    ratio: float = 0.25  # fraction of the clip's tokens kept (the paper: 0.25)
    temperature: float = 0.01  # softmax temperature of the frame budgets (the paper: 0.01)

    def __post_init__(self):
        check_range("ratio", self.ratio, 0, 1, low_open=True)
        check_range("temperature", self.temperature, 0, low_open=True)


@MERGERS.register("vidcom2", config=VidCom2Config)
class VidCom2Reducer:
    """VidCom2: per-frame budgets from frame uniqueness, then each frame's tokens least like the video and
    the frame kept."""

    scope = "clip"
    needs = ()

    def __init__(self, ratio: float = 0.25, temperature: float = 0.01, name: str = "vidcom2"):
        self.ratio, self.temperature = ratio, temperature

    def kept_total(self, frames: int, tokens: int, grid=None) -> int:
        """Tokens the clip keeps: floor(ratio * F * T), at least 1 (what aim.flops and budget mode count)."""
        return kept_tokens(frames * tokens, self.ratio)

    def budgets(self, shares: torch.Tensor, tokens: int) -> list[int]:
        """Kept tokens of each frame from the softmax of the frames' uniqueness [F]."""
        frames = len(shares)
        share = self.ratio * (1 + shares - 1 / frames) * tokens
        return apportion(share, self.kept_total(frames, tokens), tokens)

    def __call__(self, features: torch.Tensor, metric=None, attention=None, carry=None) -> ClipReduced:
        f, t, d = features.shape
        shares, score = vidcom2_scores(features, self.temperature)
        frames, index = [], []
        for i, k in enumerate(self.budgets(shares, t)):
            # the k least similar tokens; a stable sort puts ties at the lowest position
            kept = score[i].argsort(stable=True)[:k]
            frames.append(torch.full((k,), i, dtype=torch.long, device=features.device))
            index.append(kept)
        frame, index = torch.cat(frames), torch.cat(index)
        return gather_clip(with_carry(features, carry)[frame, index], frame, index, d, carry)
