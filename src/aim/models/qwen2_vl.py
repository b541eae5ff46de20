"""Qwen2-VL adapter (`Qwen2VLForConditionalGeneration`: a ViT with 2D RoPE over native-resolution
patches, a 2x2 patch merger, and a Qwen2 LLM with multi-axis RoPE, M-RoPE).

Video path as in the Hugging Face model: frames are resized so both sides are multiples of 28 within the
pixel budget (`min_pixels`..`max_pixels` per frame), consecutive frame pairs form one temporal patch
(a 3D patch of 2 x 14 x 14 pixels; an odd frame count repeats the last frame), the tower attends within
each temporal patch, and its patch merger turns every 2x2 window into one LLM token. Our merger then
runs per temporal patch ("frame group", [groups, rows*cols, dim]) and the tokens are spliced between the
prompt's text embeddings, as for LLaVA-OneVision.

M-RoPE positions (each token has a (t, h, w) position):
- text advances all three axes together, one per token;
- the visual token of group g at grid cell (r, c) sits at (s + g, s + r, s + c), s being the position
  after the text before the video;
- kept tokens keep their own original (t, h, w); a merged token takes the position of the token that
  represents its group (the merger's `token_index`), as in the 1D case (positions are integers, a mean
  position would not be); a clip reducer's groups may keep different counts (some none): each kept token
  takes the (t, h, w) of its own (group, cell), `ClipReduced.frame` naming the group (temporal patch);
- the text after the video starts at s + max(groups, rows, cols), one past the largest position of the
  unmerged video, so merging never moves text. This is the rule Qwen2-VL was trained with (its original
  `get_rope_index`: the next text starts at the video's largest position + 1). transformers 5.24
  restarts text at s + max(rows, cols), which differs only when a video has more temporal patches than
  rows and columns; the unreduced adapter equals the Hugging Face forward whenever it does not.

Single images (`modality="image"`, as the Hugging Face model takes them): the image is resized within
its own pixel budget (`image_min_pixels`..`image_max_pixels`, the checkpoints' image processor bounds) and
is one temporal patch of itself twice (the image processor duplicates it along time), so it is one merger
group of rows x cols tokens in place of `<|image_pad|>`. Its M-RoPE positions are a video's of one temporal
patch: every token at time s, (s + r, s + c) for cell (r, c), the text after at s + max(rows, cols);
kept and merged tokens keep their representative's (t, h, w) as in a video.

Preprocessing of video frames is ours (torch only; the Hugging Face video processor needs torchvision):
the same resize rule and patch order, bicubic resizing with antialiasing, CLIP normalization. An image
goes through the Hugging Face image processor itself (PIL backend, `Qwen2VLImageProcessorPil`). Pixel
values are kept as [groups, patch rows, patch columns, 3 * 2 * 14 * 14] so the grid travels with the
tensor; the tower reorders them into the merger-window order the Hugging Face tower expects.
"""
from __future__ import annotations

import importlib
import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from aim.models import MODELS, PREFIX_TEXT, QUESTION_TEXT, VISUAL, PreparedInputs
from aim.models.base import Adapter, AdapterConfig, Conversation

CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


@dataclass
class Qwen2VLAdapterConfig(AdapterConfig):
    name: str = "qwen2_vl"
    pretrained: str = "Qwen/Qwen2-VL-7B-Instruct"
    chat_template: bool = True
    # Pixel budget of one frame, as the Hugging Face video processor's defaults (qwen-vl-utils' video bounds):
    min_pixels: int = 128 * 28 * 28
    max_pixels: int = 768 * 28 * 28
    # Optional budget of the whole video (qwen-vl-utils' total_pixels): each frame then gets at most
    # total_pixels * 2 / frames pixels (never below 1.05 * min_pixels), so more frames mean smaller ones.
    total_pixels: int | None = None
    max_frames: int = 768  # more frames than this are subsampled uniformly (the processor's bound)
    # Pixel budget of a single image (`modality="image"`): the checkpoints' image processor bounds
    # (preprocessor_config.json of Qwen2-VL / Qwen2.5-VL-Instruct: min_pixels 3136, max_pixels 12845056).
    image_min_pixels: int = 56 * 56
    image_max_pixels: int = 16384 * 28 * 28
    # Source video size (height, width) assumed where no video is decoded: aim.flops and aim.bench.
    frame_size: list[int] = field(default_factory=lambda: [360, 640])
    image_mean: list[float] = field(default_factory=lambda: list(CLIP_MEAN))
    image_std: list[float] = field(default_factory=lambda: list(CLIP_STD))

    def __post_init__(self):
        from aim.checks import check_range

        super().__post_init__()
        check_range("min_pixels", self.min_pixels, 1)
        check_range("max_pixels", self.max_pixels, self.min_pixels)
        if self.total_pixels is not None:
            check_range("total_pixels", self.total_pixels, 1)
        check_range("max_frames", self.max_frames, 1)
        check_range("image_min_pixels", self.image_min_pixels, 1)
        check_range("image_max_pixels", self.image_max_pixels, self.image_min_pixels)
        if len(self.frame_size) != 2 or min(self.frame_size) < 1:
            raise ValueError(f"frame_size: must be [height, width] in pixels, got {self.frame_size}")


def smart_resize(height: int, width: int, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """Qwen2-VL's resize rule: both sides multiples of `factor` (patch x merge = 28), the aspect ratio
    kept as closely as possible, the area within [min_pixels, max_pixels]."""
    h, w = round(height / factor) * factor, round(width / factor) * factor
    if h * w > max_pixels:
        scale = math.sqrt(height * width / max_pixels)
        h = max(factor, math.floor(height / scale / factor) * factor)
        w = max(factor, math.floor(width / scale / factor) * factor)
    elif h * w < min_pixels:
        scale = math.sqrt(min_pixels / (height * width))
        h, w = math.ceil(height * scale / factor) * factor, math.ceil(width * scale / factor) * factor
    return h, w


def mrope_positions(num_before: int, token_index: torch.Tensor, grid: tuple[int, int, int], num_after: int,
                    group_times: torch.Tensor | None = None, frame: torch.Tensor | None = None) -> torch.Tensor:
    """M-RoPE position ids [3, N] of [text before][kept visual tokens][text after] (rule in the module
    docstring). The kept tokens: `token_index[n]`, the original cell (row * cols + col) of kept token n, and
    `frame[n]` its group (a clip's ragged result, groups keeping different counts, some none); or, with
    `frame` omitted, `token_index[g, j]` of kept token j of group g (every group keeping as many).
    `group_times[g]`: the temporal position of group g relative to the video's start (integers; default g,
    Qwen2-VL's; Qwen2.5-VL's grow with the frames' time stamps). The text after starts one past the
    largest position of the unmerged video on every axis."""
    groups, rows, cols = grid
    device = token_index.device
    if frame is None:
        frame = torch.arange(token_index.shape[0], device=device).repeat_interleave(token_index.shape[1])
        token_index = token_index.reshape(-1)
    if group_times is None:
        group_times = torch.arange(groups, device=device)
    s = num_before
    before = torch.arange(s, device=device).expand(3, -1)
    t = s + group_times.to(device)[frame.to(device)]
    visual = torch.stack([t, s + token_index // cols, s + token_index % cols])
    start = s + max(int(group_times.max()) + 1, rows, cols)
    after = torch.arange(start, start + num_after, device=device).expand(3, -1)
    return torch.cat([before, visual, after], 1)


# What lmms-eval's qwen2_vl / qwen2_5_vl / qwen3_vl models send (no original code path: the processor's chat
# template): a system turn (their `system_prompt`, default "You are a helpful assistant.") as a string, then the
# user's content [the visual, {"type": "text", "text": the task's text}], which the Qwen2-VL, Qwen2.5-VL and
# Qwen3-VL templates write as <|vision_start|><|video_pad|><|vision_end|> (or <|image_pad|>) directly followed
# by the text, and "<|im_start|>assistant\n".
QWEN_VL = Conversation(system="You are a helpful assistant.", system_turn="<|im_start|>system\n{system}<|im_end|>\n",
                       user_turn="<|im_start|>user\n{content}<|im_end|>\n<|im_start|>assistant\n", adjacent=True)


@MODELS.register("qwen2_vl", config=Qwen2VLAdapterConfig)
class Qwen2VLAdapter(Adapter):
    config_class = Qwen2VLAdapterConfig
    hf_model_class = "Qwen2VLForConditionalGeneration"
    hf_config_class = "Qwen2VLConfig"
    # Qwen2-VL-Instruct's conversation, for checkpoints without a chat template ({content} holds the video
    # as <|vision_start|><|video_pad|><|vision_end|>, see `inline_visual`).
    chat_fallback = ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
                     "<|im_start|>user\n{content}<|im_end|>\n<|im_start|>assistant\n")
    modalities = ("video", "image")
    lmms_eval_conversation = QWEN_VL

    def __init__(self, model, tokenizer, cfg: Qwen2VLAdapterConfig):
        super().__init__(model, tokenizer, cfg)
        vc = model.config.vision_config
        self.patch_size, self.temporal_patch, self.merge = vc.patch_size, vc.temporal_patch_size, vc.spatial_merge_size
        self.mean = torch.tensor(cfg.image_mean).view(1, 3, 1, 1)
        self.std = torch.tensor(cfg.image_std).view(1, 3, 1, 1)

    # --- token layout ----------------------------------------------------------------------------
    @staticmethod
    def frame_budget(cfg, num_frames: int) -> int:
        """Pixels allowed per frame for a video of `num_frames` frames."""
        if cfg.total_pixels is None:
            return cfg.max_pixels
        return max(min(cfg.max_pixels, cfg.total_pixels * 2 // num_frames), int(cfg.min_pixels * 1.05))

    @classmethod
    def resized_size(cls, vision_config, cfg, height: int, width: int, num_frames: int) -> tuple[int, int]:
        factor = vision_config.patch_size * vision_config.spatial_merge_size
        return smart_resize(height, width, factor, cfg.min_pixels, cls.frame_budget(cfg, num_frames))

    @classmethod
    def feature_grid(cls, hf_config, cfg, num_frames: int, frame_size=None) -> tuple[int, int, int]:
        """(temporal patches, rows, columns) of the LLM tokens of a video of `num_frames` frames of
        `frame_size` (default: the preset's `frame_size`)."""
        vc = hf_config.vision_config
        frames = min(num_frames, cfg.max_frames)
        h, w = cls.resized_size(vc, cfg, *(frame_size or cfg.frame_size), frames)
        cell = vc.patch_size * vc.spatial_merge_size
        return math.ceil(frames / vc.temporal_patch_size), h // cell, w // cell

    def grid(self, num_frames: int) -> tuple[int, int, int]:
        return self.feature_grid(self.model.config, self.cfg, num_frames)

    @staticmethod
    def image_grid(hf_config, cfg, image_size: tuple[int, int]) -> tuple[int, int]:
        """(rows, columns) of the LLM tokens of one image of `image_size` (H, W): the image resized within
        the image pixel budget, one token per 28 x 28 pixels. What `aim.flops` counts for `flops.image_size`."""
        vc = hf_config.vision_config
        cell = vc.patch_size * vc.spatial_merge_size
        h, w = smart_resize(*image_size, cell, cfg.image_min_pixels, cfg.image_max_pixels)
        return h // cell, w // cell

    # --- visual path -----------------------------------------------------------------------------
    def seen_frames(self, count: int) -> np.ndarray:
        """Indices of the frames the model sees of `count` given: all of them, or `max_frames` spread evenly."""
        if count > self.cfg.max_frames:
            return np.linspace(0, count - 1, self.cfg.max_frames).round().astype(int)
        return np.arange(count)

    def pixel_values(self, frames: np.ndarray, modality: str = "video") -> torch.Tensor:
        """uint8 RGB frames [F, H, W, 3] -> normalized patches [groups, rows*2, cols*2, 3*2*14*14]; one image
        [1, H, W, 3] -> [1, rows*2, cols*2, 3*2*14*14] (`image_pixel_values`)."""
        if modality == "image":
            return self.image_pixel_values(frames)
        frames = frames[self.seen_frames(len(frames))]
        f, height, width, _ = frames.shape
        h, w = self.resized_size(self.model.config.vision_config, self.cfg, height, width, f)
        x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()
        if (h, w) != (height, width):  # resize as uint8 images are: round and clip
            x = F.interpolate(x, size=(h, w), mode="bicubic", align_corners=False, antialias=True).round().clamp(0, 255)
        if pad := -f % self.temporal_patch:  # an odd count repeats the last frame, as the processor does
            x = torch.cat([x, x[-1:].expand(pad, -1, -1, -1)])
        x = (x / 255.0 - self.mean) / self.std
        ps, tp = self.patch_size, self.temporal_patch
        g, hp, wp = x.shape[0] // tp, h // ps, w // ps
        x = x.view(g, tp, 3, hp, ps, wp, ps).permute(0, 3, 5, 2, 1, 4, 6)  # [g, hp, wp, C, t, ps, ps]
        return x.reshape(g, hp, wp, 3 * tp * ps * ps).to(self.device, self.dtype)

    def image_pixel_values(self, image: np.ndarray) -> torch.Tensor:
        """One image [1, H, W, 3] -> [1, hp, wp, 3*2*14*14] by the Hugging Face image processor (PIL backend)
        with the preset's image pixel budget and normalization and the model's patch sizes: its patches (the
        image twice along time), taken back from its merger-window order to the grid."""
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

        if image.ndim != 4 or len(image) != 1:
            raise ValueError(f"an image input is one image [1, H, W, 3], got shape {tuple(image.shape)}")
        cfg = self.cfg
        processor = Qwen2VLImageProcessorPil(
            min_pixels=cfg.image_min_pixels, max_pixels=cfg.image_max_pixels, patch_size=self.patch_size,
            temporal_patch_size=self.temporal_patch, merge_size=self.merge, image_mean=list(cfg.image_mean),
            image_std=list(cfg.image_std))
        out = processor(images=[np.ascontiguousarray(image[0])], return_tensors="pt")
        _, hp, wp = out["image_grid_thw"][0].tolist()
        m, flat = self.merge, out["pixel_values"]
        grid = flat.view(1, hp // m, wp // m, m, m, -1).permute(0, 1, 3, 2, 4, 5).reshape(1, hp, wp, -1)
        return grid.to(self.device, self.dtype)

    def hf_video_inputs(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Our patches as the Hugging Face model takes them: flat, each 2x2 merger window contiguous
        (`pixel_values_videos` [groups * hp * wp, patch dim]) and `video_grid_thw` [[groups, hp, wp]]."""
        g, hp, wp, p = pixel_values.shape
        m = self.merge
        flat = pixel_values.reshape(g, hp // m, m, wp // m, m, p).permute(0, 1, 3, 2, 4, 5).reshape(-1, p)
        return flat, torch.tensor([[g, hp, wp]], device=pixel_values.device)

    def tower_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The tower's last hidden state before its patch merger: [groups, hp * wp, embed dim], in
        merger-window order. The Hugging Face tower runs with its merger set aside for the call, so the
        merger is neither run twice nor counted with the tower."""
        visual = self.model.model.visual
        flat, grid = self.hf_video_inputs(pixel_values)
        # The stand-in merger only groups each window's patches, so the tower's own reordering of merger
        # outputs (Qwen2.5-VL's, undoing its window-attention order) brings the patches back in order.
        merger, visual.merger = visual.merger, _GroupWindows(self.merge**2)
        try:
            hidden = visual(flat, grid_thw=grid).pooler_output
        finally:
            visual.merger = merger
        return hidden.reshape(pixel_values.shape[0], -1, hidden.shape[-1] // self.merge**2)

    def window_order(self, grid: torch.Tensor) -> torch.Tensor | None:
        """The order in which the tower's blocks hold the merger windows (indices of windows in merger-window
        order), or None where they are held in that order (Qwen2-VL; Qwen2.5-VL's window attention permutes)."""
        return None

    def project(self, tower_hidden: torch.Tensor, modality: str = "video") -> torch.Tensor:
        """The model's 2x2 patch merger (its projector into the LLM): [groups, hp*wp, E] -> [groups, rows*cols, D]."""
        g, n, e = tower_hidden.shape
        return self.model.model.visual.merger(tower_hidden.reshape(-1, e)).view(g, n // self.merge**2, -1)

    def visual_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.project(self.tower_features(pixel_values))

    def encode_frames(self, pixel_values: torch.Tensor, needs=(), modality: str = "video") -> dict[str, torch.Tensor]:
        """Features [groups, rows*cols, D] and, as a merger asks, signals of the tower's last block pooled
        to the merger's windows (mean of the 4 patches): `metric`, its keys before RoPE (content, not
        position), and `attention`, the head-averaged attention each patch receives from the patches of
        its temporal group (the tower attends within a group; it has no [CLS] token), and `grid`, the
        (rows, cols) of each group's tokens."""
        grid = {"grid": (pixel_values.shape[1] // self.merge, pixel_values.shape[2] // self.merge)} if "grid" in needs else {}
        if not {"metric", "attention"} & set(needs):
            return {"features": self.visual_features(pixel_values), **grid}
        attn = self.model.model.visual.blocks[-1].attn
        captured = {}

        def grab(_module, args, kwargs):
            captured["hidden"] = args[0] if args else kwargs["hidden_states"]
            captured["rope"] = kwargs["position_embeddings"]

        handle = attn.register_forward_pre_hook(grab, with_kwargs=True)
        try:
            hidden = self.tower_features(pixel_values)
        finally:
            handle.remove()
        g = pixel_values.shape[0]
        n = captured["hidden"].shape[0]
        q, k, _ = attn.qkv(captured["hidden"]).reshape(n, 3, attn.num_heads, -1).unbind(1)  # [n, heads, hd]
        mod = importlib.import_module(type(attn).__module__)
        q_rope, k_rope = mod.apply_rotary_pos_emb_vision(q, k, *captured["rope"])
        windows = self.merge**2
        order = self.window_order(self.hf_video_inputs(pixel_values)[1])
        if order is not None:  # back to merger-window order (attention within a group does not depend on it)
            back = torch.argsort(order.to(k.device))
            k, q_rope, k_rope = (x.view(-1, windows, *x.shape[1:])[back].reshape(x.shape) for x in (k, q_rope, k_rope))
        out = {"features": self.project(hidden), **grid}
        if "metric" in needs:
            out["metric"] = k.reshape(g, -1, windows, k.shape[1] * k.shape[2]).mean(2)
        if "attention" in needs:
            q, k = q_rope, k_rope
            received = torch.stack([self._received_attention(qg, kg, attn.scaling)
                                    for qg, kg in zip(q.view(g, -1, *q.shape[1:]), k.view(g, -1, *k.shape[1:]))])
            out["attention"] = received.view(g, -1, windows).mean(2)
        return out

    @staticmethod
    def _received_attention(q, k, scale):
        """[p, heads, d] queries and keys of one group -> mean attention each patch receives [p]."""
        probs = torch.softmax(torch.einsum("qhd,khd->hqk", q.float(), k.float()) * scale, dim=-1)
        return probs.mean(0).mean(0)

    def group_times(self, groups: int, frame_times=None) -> torch.Tensor:
        """Temporal M-RoPE position of each temporal patch, from the video's start: one per patch (whenever
        the frames were shown: `frame_times` is not read)."""
        return torch.arange(groups)

    # --- text ------------------------------------------------------------------------------------
    def inline_visual(self, modality: str = "video") -> str:
        config = self.model.config
        start, end = self.tokenizer.convert_ids_to_tokens([config.vision_start_token_id, config.vision_end_token_id])
        return start + self.visual_token(modality) + end

    # --- assembly --------------------------------------------------------------------------------
    @torch.no_grad()
    def prepare(self, frames: np.ndarray, question: str, options: list[str], merger, scoring: str = "letter",
                modality: str = "video", frame_times=None, task=None) -> PreparedInputs:
        """`frame_times`: when the frames were shown (`aim.data.video.FrameTimes`, None: unknown), read by
        `group_times` (Qwen2.5-VL's absolute time; Qwen2-VL's temporal positions are patch indices)."""
        self.check_modality(modality)
        before, after = self.prompt_ids(question, options, scoring, modality, task)
        pixels = self.pixel_values(frames, modality)  # an image: one temporal patch, one merger group
        encoded = self.encode_frames(pixels, needs=getattr(merger, "needs", ()))
        features = encoded.pop("features")
        grid_hw = (pixels.shape[1] // self.merge, pixels.shape[2] // self.merge)
        return self.assemble_clip(before, self.reduce(merger, after, features, **encoded), len(features), after,
                                  grid_hw, frame_times)

    def assemble_clip(self, before_ids, clip, groups: int, after_ids, grid_hw=None, frame_times=None) -> PreparedInputs:
        """[before text][kept tokens, group by group][after text] with M-RoPE positions [3, 1, N]: kept token n
        at (s + time of its group `clip.frame[n]`, s + row, s + col) of its cell `clip.token_index[n]`, whatever
        each group keeps (a group may keep none); the text after at the unmerged video's place. `groups`: the
        temporal patches of the unmerged video; `grid_hw`: (rows, cols) of each group's unmerged token grid
        (default: the preset's `frame_size`); `frame_times`: when the frames were shown (None: unknown)."""
        if grid_hw is None:
            grid_hw = self.grid(groups * self.temporal_patch)[1:]
        visual = clip.features
        embeds = torch.cat([self.embed_tokens(before_ids), visual, self.embed_tokens(after_ids)])
        positions = mrope_positions(len(before_ids), clip.token_index.to(self.device), (groups, *grid_hw),
                                    len(after_ids), self.group_times(groups, frame_times), clip.frame.to(self.device))
        roles = torch.tensor(
            [PREFIX_TEXT] * len(before_ids) + [VISUAL] * len(visual) + [QUESTION_TEXT] * len(after_ids),
            dtype=torch.int8,
        )
        return PreparedInputs(embeds[None], positions[:, None, :], roles, visual_per_group=clip.counts(groups))


class _GroupWindows(torch.nn.Module):
    """Stands in for the tower's patch merger: [patches, E] -> [windows, unit * E], each merger window's
    patches side by side, so the tower's output is per window, as the merger's is."""

    def __init__(self, unit: int):
        super().__init__()
        self.unit = unit

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(-1, self.unit * x.shape[-1])
