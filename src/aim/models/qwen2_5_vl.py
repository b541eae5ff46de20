"""Qwen2.5-VL adapter (`Qwen2_5_VLForConditionalGeneration`). The Qwen2-VL adapter with two differences:

- the vision tower (RMSNorm, SwiGLU MLP) attends within windows of `window_size` pixels in most blocks
  and over the whole temporal patch in `fullatt_block_indexes`; it holds the patches in window order, and
  its own output reordering brings them back (see `Qwen2VLAdapter.tower_features`); `window_order` tells
  the tower signals (`metric`, `attention`) the same order;
- M-RoPE with absolute time: temporal patch g sits at temporal position
  int(g * tokens_per_second * seconds_per_group) instead of g, `seconds_per_group` being the time one
  temporal patch spans (the processor's `second_per_grid_ts` = temporal_patch_size / the sampled frames'
  fps). The rate is the decoded video's own (`frame_times.sampled_fps`: the frames sampled over the video's
  duration, as Hugging Face's VideoMetadata.sampled_fps, which its processor uses); `model.fps` stands in
  only where the times are unknown (frames not decoded from a video: aim.bench, frames given to `prepare`
  directly). The text after the video starts one past the video's largest position, as for Qwen2-VL.

Everything else (resize rule, patch layout, 2x2 patch merger, merging per temporal patch, kept and merged
tokens keeping their representative's (t, h, w)) is Qwen2-VL's, inherited.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from aim.models import MODELS
from aim.models.qwen2_vl import Qwen2VLAdapter, Qwen2VLAdapterConfig


@dataclass
class Qwen2_5VLAdapterConfig(Qwen2VLAdapterConfig):
    name: str = "qwen2_5_vl"
    pretrained: str = "Qwen/Qwen2.5-VL-7B-Instruct"
    # frames per second of the sampled frames, only where the video's own is unknown (frames not decoded from
    # a video: aim.bench); a decoded video's frame times set the temporal M-RoPE spacing themselves
    fps: float = 2.0

    def __post_init__(self):
        from aim.checks import check_range

        super().__post_init__()
        check_range("fps", self.fps, 0, low_open=True)


@MODELS.register("qwen2_5_vl", config=Qwen2_5VLAdapterConfig)
class Qwen2_5VLAdapter(Qwen2VLAdapter):
    config_class = Qwen2_5VLAdapterConfig
    hf_model_class = "Qwen2_5_VLForConditionalGeneration"
    hf_config_class = "Qwen2_5_VLConfig"

    def frame_rate(self, frame_times=None) -> float:
        """Frames per second of the frames the model sees: the decoded video's sampled rate, lowered in
        proportion where more than `max_frames` frames are subsampled (`pixel_values`); `model.fps` where
        `frame_times` is None (unknown)."""
        if frame_times is None:
            return self.cfg.fps
        sampled = len(frame_times.seconds)
        return frame_times.sampled_fps * min(sampled, self.cfg.max_frames) / sampled

    def seconds_per_group(self, frame_times=None) -> float:
        """The processor's `second_per_grid_ts`: the seconds one temporal patch spans."""
        return self.temporal_patch / self.frame_rate(frame_times)

    def group_times(self, groups: int, frame_times=None) -> torch.Tensor:
        """Temporal M-RoPE position of each temporal patch: its start time in units of 1 / tokens_per_second
        (Qwen2.5-VL's absolute time), truncated as the Hugging Face model does with the processor's float32
        `second_per_grid_ts`."""
        seconds = torch.tensor(self.seconds_per_group(frame_times), dtype=torch.float32)
        interval = self.model.config.vision_config.tokens_per_second * seconds
        return (torch.arange(groups) * interval).long()

    def window_order(self, grid: torch.Tensor) -> torch.Tensor:
        from transformers.vision_utils import get_vision_window_index

        vc = self.model.config.vision_config
        return get_vision_window_index(grid.cpu(), vc.spatial_merge_size, vc.window_size, vc.patch_size)[0]
