"""VisionZip (Yang et al., "VisionZip: Longer is Better but Not Necessary in Vision Language Models", CVPR 2025,
Sec. 3.2) as a merger before the LLM. Of the K tokens a frame keeps (`ratio`), D are dominant and C = K - D
contextual:

- dominant: the D tokens that receive the most attention, a_j = attention of the tower's [CLS] query to
  patch j (CLIP; summed or averaged over heads, the same ranking); SigLIP towers have no [CLS], so the
  adapter gives the mean attention each patch receives from all patches, as for PruMerge;
- contextual: the T - D other tokens, in their original order, are split into C targets, every
  s-th token with s = max(1, floor((T - D) / C)) (the first C of them), and the rest, each assigned to its
  most similar target by the cosine of the tower's keys, j -> argmax_c cos(k_j, k_c). Contextual token c
  is x_c + mean of the tokens assigned to it (the official code's rule; x_c alone when none is).

The paper's split is 54 dominant + 10 contextual of 64 kept (108 + 20 of 128, 162 + 30 of 192) on
LLaVA-1.5: `dominant` = 54/64 of the kept tokens, D = round(dominant * K). The paper selects and merges the
tower's hidden states of its second-to-last layer before the projector; at this seam the projected features
are merged (the adapter gives the same layer's attention and keys), as PruMerge is here. A dominant token
stands at its own position, a contextual one at its target's. The key similarities cost (T - D - C) * C * Dk
multiply-adds per frame (counted by fvcore as merge FLOPs).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from aim.checks import check_range
from aim.merging import MERGERS, Merged, kept_tokens, split_carry, with_carry


def visionzip_frame(x: torch.Tensor, keys: torch.Tensor, attention: torch.Tensor, dominant: int, contextual: int):
    """One frame: x [T, D], keys [T, Dk], attention [T] -> (features [dominant + contextual, D], positions),
    both in original position order."""
    t = x.shape[0]
    top = attention.float().topk(dominant).indices
    rest = torch.ones(t, dtype=torch.bool, device=x.device)
    rest[top] = False
    others = rest.nonzero().flatten()  # the non-dominant tokens, in original order
    parts, positions = [x[top]], [top]
    if contextual:
        step = max(1, len(others) // contextual)
        is_target = torch.zeros(len(others), dtype=torch.bool, device=x.device)
        is_target[torch.arange(0, len(others), step, device=x.device)[:contextual]] = True
        targets, merged = others[is_target], others[~is_target]
        unit = F.normalize(keys.float(), dim=-1)
        nearest = (unit[merged] @ unit[targets].T).argmax(dim=1)  # each merged token's most similar target
        assign = F.one_hot(nearest, len(targets)).to(x.dtype).T  # [C, merged]
        counts = assign.sum(dim=1, keepdim=True).clamp_min(1)
        parts.append(x[targets] + (assign @ x[merged]) / counts)
        positions.append(targets)
    features, positions = torch.cat(parts), torch.cat(positions)
    order = positions.argsort()
    return features[order], positions[order]


@dataclass
class VisionZipConfig:
    name: str = "visionzip"
    ratio: float = 0.25  # fraction of each frame's tokens kept, dominant and contextual together
    dominant: float = 0.84375  # share of the kept tokens that are dominant (the paper: 54 of 64)

    def __post_init__(self):
        check_range("ratio", self.ratio, 0, 1, low_open=True)
        check_range("dominant", self.dominant, 0, 1)


@MERGERS.register("visionzip", config=VisionZipConfig)
class VisionZipMerger:
    """VisionZip: the most attended tokens kept (dominant), the rest merged by key similarity into a few
    evenly spaced contextual tokens."""

    needs = ("metric", "attention")

    def __init__(self, ratio: float = 0.25, dominant: float = 0.84375, name: str = "visionzip"):
        self.ratio, self.dominant = ratio, dominant

    def split(self, num_tokens: int) -> tuple[int, int]:
        """(dominant, contextual) tokens per frame of `num_tokens`."""
        kept = kept_tokens(num_tokens, self.ratio)
        dominant = min(kept, round(self.dominant * kept))
        return dominant, kept - dominant

    def __call__(self, features: torch.Tensor, metric=None, attention=None, carry=None) -> Merged:
        if metric is None or attention is None:
            raise ValueError("visionzip needs the vision tower's keys and attention; this model adapter does not "
                             "provide them")
        dominant, contextual = self.split(features.shape[1])
        x = with_carry(features, carry)  # the merge is linear in the channels: the carry is merged alike
        frames = [visionzip_frame(y, k, a, dominant, contextual) for y, k, a in zip(x, metric, attention)]
        merged = torch.stack([f for f, _ in frames])
        return split_carry(merged, torch.stack([p for _, p in frames]), features.shape[-1], carry)
