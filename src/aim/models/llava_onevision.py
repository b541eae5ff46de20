"""LLaVA-OneVision adapter (`LlavaOnevisionForConditionalGeneration`: SigLIP tower, projector, Qwen2).

Video path as in the Hugging Face model: vision tower hidden state -> projector -> 2x2 bilinear pooling
per frame -> [frames, tokens, dim]; the merger runs here, then all frames are flattened and the
image-newline embedding is appended. The adapter assembles `inputs_embeds` itself (instead of passing
pixels to the HF forward) so that merging can sit between the projector and the LLM. Kept tokens keep
their original (1D) positions; a merged token sits at the position of the token that represents it. A clip
reducer's ragged result is laid out alike (`assemble_clip`): frame by frame, each frame's kept tokens (maybe
none) at their own positions of that frame's span, the one newline after the last frame's span.

Single-image path (`modality="image"`, anyres as in the Hugging Face model): the Hugging Face image
processor (PIL backend) gives the base image resized to the tower's resolution plus the crops of the image
resized into its best grid of `image_grid_pinpoints` (zero-padded to it); the tower and projector run on
every crop (no pooling: 27x27 = 729 tokens each at 384 px). The crops' grids are joined, the padding rows
or columns removed (unpadded to the image's aspect), the joined grid bilinearly shrunk when it holds more
than 9 crops' worth of tokens (`vision_aspect_ratio: anyres_max_9`), and an image-newline embedding ends
every row; the LLM sees [base image tokens][grid rows, each + newline]. Merging runs per anyres crop: the
base image is one group, and each crop is one group holding the cells of the final grid that lie in it
(after unpadding and shrinking, its own rectangle: interior crops 27x27, edge crops smaller), merged on
its own (the merger is called once per crop, so crops of different sizes keep `ratio` of their own
tokens). Kept tokens keep their original positions (a merged token at its representative's); every
newline stays (it is not a visual token and is never pruned). Mergers that need a square grid (`pool`)
therefore work on the base image and whole crops only, and fail on an edge crop that unpadding cut.
The tower signals (`metric`, `attention`) are unpadded and shrunk the same way. Only single images:
multi-image prompts (where each image is one 729-token base without crops) are not wired in.

Prompt: with `chat_template: true` (the real checkpoints' presets) the user's turn is wrapped in a chat
format. `chat_wrap: lmms_eval` (the presets'): LLaVA-NeXT's `qwen_1_5` conversation (`QWEN_1_5`), as lmms-eval's
llava_onevision and llava_vid models build it: `<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n
<|im_start|>user\n<video>\n{text}<|im_end|>\n<|im_start|>assistant\n` (LLaVA-NeXT writes <image> where the video's
features go). `chat_wrap: hf`: the checkpoint's own template; the llava-hf checkpoints' writes
`<|im_start|>user <video>\n{text}<|im_end|>\n<|im_start|>assistant\n` (no system turn), and `chat_fallback` (used when
a checkpoint ships no template) is the Qwen2 conversation with its system turn. The text is the
dataset's (`aim.prompts.TaskPrompt`: the question, options and instructions as the benchmark's lmms-eval task
lays them out), after the video and a newline.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from aim.models import MODELS, PREFIX_TEXT, QUESTION_TEXT, VISUAL, PreparedInputs
from aim.models.base import Adapter, AdapterConfig, Conversation, square_frames
from aim.tokens import reduce_clip


# LLaVA-NeXT's "qwen_1_5" conversation (llava/conversation.py, SeparatorStyle.CHATML), which lmms-eval's
# llava_onevision model uses by default and LLaVA-Video's documented lmms-eval runs name (conv_template=qwen_1_5):
# lmms-eval writes the user's turn as "<image>\n" + the task's text (one <image> for a whole video: its frames'
# features stand there), the conversation puts the system turn first and ends with "<|im_start|>assistant\n".
QWEN_1_5 = Conversation(system="You are a helpful assistant.", system_turn="<|im_start|>system\n{system}<|im_end|>\n",
                        user_turn="<|im_start|>user\n{content}<|im_end|>\n<|im_start|>assistant\n",
                        omit_empty_system=True)


@dataclass
class LlavaOnevisionConfig(AdapterConfig):
    name: str = "llava_onevision"
    pretrained: str = "aim:toy_llava_ov"
    # Defaults: the bundled toy model's plain prompt (the real checkpoints' presets use the chat format), around
    # the task's text (the bundled benchmark's: aim.data.TOY_PROMPT)
    prompt_template: str = "<s> user <video> {prompt} answer :"
    likelihood_template: str = "<s> user <video> {prompt}"
    image_mean: list[float] = field(default_factory=lambda: [0.5, 0.5, 0.5])  # SigLIP's normalization
    image_std: list[float] = field(default_factory=lambda: [0.5, 0.5, 0.5])


@MODELS.register("llava_onevision", config=LlavaOnevisionConfig)
class LlavaOnevisionAdapter(Adapter):
    config_class = LlavaOnevisionConfig
    hf_model_class = "LlavaOnevisionForConditionalGeneration"
    hf_config_class = "LlavaOnevisionConfig"
    extra_text_tokens = 1  # the image-newline embedding after the video
    modalities = ("video", "image")
    # The Qwen2 ChatML conversation LLaVA-OneVision was trained and evaluated with (LLaVA-NeXT's
    # "qwen_1_5" template, which lmms-eval uses for it), for checkpoints that ship no chat template.
    chat_fallback = ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
                     "<|im_start|>user\n{content}<|im_end|>\n<|im_start|>assistant\n")
    lmms_eval_conversation = QWEN_1_5

    def __init__(self, model, tokenizer, cfg: LlavaOnevisionConfig):
        super().__init__(model, tokenizer, cfg)
        vc = model.config.vision_config
        self.image_size = vc.image_size
        self.patch_grid = vc.image_size // vc.patch_size
        self.mean = torch.tensor(cfg.image_mean).view(1, 3, 1, 1)
        self.std = torch.tensor(cfg.image_std).view(1, 3, 1, 1)

    @staticmethod
    def feature_grid(hf_config, cfg, num_frames: int) -> tuple[int, int, int]:
        """(frames, rows, columns) of the visual tokens: the tower's patch grid, then the 2x2 pooling of
        video frames (ceil per side). 384 px / patch 14 -> 27x27 patches -> 14x14 = 196 tokens per frame."""
        vc = hf_config.vision_config
        side = math.ceil(vc.image_size // vc.patch_size / 2)
        return num_frames, side, side

    def grid(self, num_frames: int) -> tuple[int, int, int]:
        return self.feature_grid(self.model.config, self.cfg, num_frames)

    # --- visual path -----------------------------------------------------------------------------
    def pixel_values(self, frames: np.ndarray, modality: str = "video") -> torch.Tensor:
        """uint8 RGB frames [T, H, W, 3] -> normalized [T, 3, S, S] at the tower's resolution; one image
        [1, H, W, 3] -> its anyres crops [1 + crops, 3, S, S], the base image first."""
        if modality == "image":
            return self.image_pixel_values(frames)
        # as the checkpoints' video processor (LlavaOnevisionVideoProcessor, resample 3)
        return square_frames(frames, self.image_size, self.mean, self.std).to(self.device, self.dtype)

    def tower_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Vision tower hidden state at the configured layer: [N, patches, vision_dim]."""
        mcfg = self.model.config
        out = self.model.model.vision_tower(pixel_values, output_hidden_states=True)
        hidden = out.hidden_states[mcfg.vision_feature_layer]
        if mcfg.vision_feature_select_strategy == "default":
            hidden = hidden[:, 1:]
        return hidden

    def image_pixel_values(self, frames: np.ndarray) -> torch.Tensor:
        """One image [1, H, W, 3] -> [1 + crops, 3, S, S] by the Hugging Face image processor (PIL backend),
        with the preset's normalization and the model's grid pinpoints."""
        from transformers.models.llava_onevision.image_processing_pil_llava_onevision import (
            LlavaOnevisionImageProcessorPil,
        )

        if frames.ndim != 4 or len(frames) != 1:
            raise ValueError(f"an image input is one image [1, H, W, 3], got shape {tuple(frames.shape)}")
        pinpoints = self.model.config.image_grid_pinpoints
        if any(side % self.image_size for point in pinpoints for side in point):
            raise ValueError(f"model.architecture.image_grid_pinpoints: anyres grids must be multiples of the tower's "
                             f"{self.image_size} px, got {pinpoints}")
        processor = LlavaOnevisionImageProcessorPil(
            size={"height": self.image_size, "width": self.image_size}, image_mean=list(self.cfg.image_mean),
            image_std=list(self.cfg.image_std), image_grid_pinpoints=self.model.config.image_grid_pinpoints)
        pixels = processor(images=[np.ascontiguousarray(frames[0])], return_tensors="pt")["pixel_values"][0]
        return pixels.to(self.device, self.dtype)

    def pool_tokens(self, x: torch.Tensor, modality: str = "video") -> torch.Tensor:
        """The model's 2x2 bilinear pooling of video frames' token grids [N, patches, C] -> [N, tokens, C];
        images keep every token."""
        return self.model.model.apply_pooling(x) if modality == "video" else x

    # --- anyres images ---------------------------------------------------------------------------
    def anyres_grid(self, crops: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
        return pack_anyres(self.model.config, crops, image_size)

    @staticmethod
    def image_layout(hf_config, image_size: tuple[int, int]) -> tuple[int, list[tuple[int, int]], tuple[int, int]]:
        """The tokens of one image of `image_size` (H, W), from the config alone: (the base image's tokens,
        the (rows, cols) of the packed grid's cells in each crop that has any (a rectangle), (rows, cols) of
        that grid). The LLM sees the base tokens, then the grid row by row, each row followed by a newline
        token; merging runs on the base image and on each crop's cells apart (`prepare_image`)."""
        vc = hf_config.vision_config
        owner = anyres_owner(hf_config, image_size)
        crops = [(int((owner == c).any(1).sum()), int((owner == c).any(0).sum())) for c in owner.unique().tolist()]
        return (vc.image_size // vc.patch_size) ** 2, crops, tuple(owner.shape)

    def prepare_image(self, image: np.ndarray, question: str, options: list[str], merger,
                      scoring: str = "letter", task=None) -> PreparedInputs:
        """One image, anyres: [before][base image][grid rows, each + newline][after], merged per crop."""
        before, after = self.prompt_ids(question, options, scoring, "image", task)
        pixels = self.pixel_values(image, "image")
        enc = self.on_input_device(self.encode_frames(pixels, needs=getattr(merger, "needs", ()), modality="image"))
        merger = self.with_prompt(merger, after)
        base_grid = {"grid": enc.pop("grid")} if "grid" in enc else {}
        side2 = self.patch_grid**2
        image_size = tuple(image.shape[1:3])
        owner = anyres_owner(self.model.config, image_size).to(self.device)  # [rows, cols]: each cell's crop
        rows, cols = owner.shape
        grid = {k: self.anyres_grid(v[1:] if v.dim() == 3 else v[1:, :, None], image_size).flatten(1).T
                for k, v in enc.items()}  # [rows * cols, C] per signal, cells in raster order
        p, grid_start = len(before), len(before) + side2
        feats, positions = [], []
        base = {k: v[:1] for k, v in enc.items() if k != "features"}
        kept = reduce_clip(merger, enc["features"][:1], **base, **base_grid)
        feats.append(kept.features)
        positions.append(p + kept.token_index.to(self.device))
        cell_pos = grid_start + torch.arange(rows, device=self.device)[:, None] * (cols + 1) + torch.arange(cols, device=self.device)
        for crop in owner.unique().tolist():
            cells = (owner.flatten() == crop).nonzero().flatten()
            signals = {k: v[cells][None] if k != "attention" else v[cells, 0][None] for k, v in grid.items()}
            if base_grid:  # the crop's cells form a rectangle of the packed grid
                crop_rows, crop_cols = (owner == crop).nonzero().unbind(1)
                signals["grid"] = (len(crop_rows.unique()), len(crop_cols.unique()))
            kept = reduce_clip(merger, signals.pop("features"), **signals)
            feats.append(kept.features)
            positions.append(cell_pos.flatten()[cells[kept.token_index.to(self.device)]])
        newline_pos = grid_start + torch.arange(rows, device=self.device) * (cols + 1) + cols
        visual, visual_pos = torch.cat(feats), torch.cat(positions)
        newline = self.model.model.image_newline[None].to(visual.device, visual.dtype).expand(rows, -1)
        middle_pos, order = torch.cat([visual_pos, newline_pos]).sort()
        middle = torch.cat([visual, newline])[order]
        is_visual = torch.cat([torch.ones(len(visual), dtype=torch.bool), torch.zeros(rows, dtype=torch.bool)])[order.cpu()]
        after_start = grid_start + rows * (cols + 1)
        embeds = torch.cat([self.embed_tokens(before), middle, self.embed_tokens(after)])
        position_ids = torch.cat([torch.arange(p, device=self.device), middle_pos,
                                  torch.arange(after_start, after_start + len(after), device=self.device)])
        middle_roles = torch.where(is_visual, VISUAL, QUESTION_TEXT).to(torch.int8)
        roles = torch.cat([torch.full((p,), PREFIX_TEXT, dtype=torch.int8), middle_roles,
                           torch.full((len(after),), QUESTION_TEXT, dtype=torch.int8)])
        return PreparedInputs(embeds[None], position_ids[None], roles, visual_per_group=[len(f) for f in feats])

    def project(self, tower_hidden: torch.Tensor, modality: str = "video") -> torch.Tensor:
        """Projector then the pooling: [N, patches, vd] -> [N, tokens, D]."""
        return self.pool_tokens(self.model.model.multi_modal_projector(tower_hidden), modality)

    def visual_features(self, pixel_values: torch.Tensor, modality: str = "video") -> torch.Tensor:
        return self.project(self.tower_features(pixel_values), modality)

    def encode_frames(self, pixel_values: torch.Tensor, needs=(), modality: str = "video") -> dict[str, torch.Tensor]:
        """Features [F, T, D] and, as a merger asks (`needs`), signals of the tower layer that produced
        them, pooled to the same token grid: `metric` (its keys, heads concatenated) [F, T, Dk] and
        `attention` [F, T], the attention each patch receives from the [CLS] query, or, for towers
        without a [CLS] token (SigLIP), the mean attention it receives from all patch queries; `grid`, the
        (rows, cols) of each frame's tokens (video: after the pooling)."""
        side = self.grid(1)[1] if modality == "video" else self.patch_grid
        grid = {"grid": (side, side)} if "grid" in needs else {}
        if not {"metric", "attention"} & set(needs):
            return {"features": self.visual_features(pixel_values, modality), **grid}
        tower = self.model.model.vision_tower
        layers = getattr(tower, "vision_model", tower).encoder.layers
        producer = layers[self.model.config.vision_feature_layer % (len(layers) + 1) - 1]
        captured = {}
        hooks = [
            getattr(producer.self_attn, f"{name}_proj").register_forward_hook(
                lambda _m, _i, out, name=name: captured.__setitem__(name, out)
            )
            for name in ("q", "k")
        ]
        try:
            hidden = self.tower_features(pixel_values)
        finally:
            for h in hooks:
                h.remove()
        has_cls = self.model.config.vision_feature_select_strategy == "default"
        out = {"features": self.project(hidden, modality), **grid}
        pool = lambda x: self.pool_tokens(x, modality)  # noqa: E731
        if "metric" in needs:
            out["metric"] = pool(captured["k"][:, 1:] if has_cls else captured["k"])
        if "attention" in needs:
            attn = self._received_attention(captured["q"], captured["k"], producer.self_attn.num_heads, has_cls)
            out["attention"] = pool(attn.unsqueeze(-1)).squeeze(-1)
        return out

    @staticmethod
    def _received_attention(q, k, heads, has_cls):
        """Head-averaged attention received by each patch, one frame at a time to bound memory."""
        n, p, d = q.shape
        rows = []
        for f in range(n):
            qh = q[f].view(p, heads, d // heads).transpose(0, 1)
            kh = k[f].view(p, heads, d // heads).transpose(0, 1)
            probs = torch.softmax(qh @ kh.transpose(1, 2) * (d // heads) ** -0.5, dim=-1).mean(0)  # [p, p]
            rows.append(probs[0, 1:] if has_cls else probs.mean(0))
        return torch.stack(rows)

    # --- assembly --------------------------------------------------------------------------------
    @torch.no_grad()
    def prepare(self, frames: np.ndarray, question: str, options: list[str], merger, scoring: str = "letter",
                modality: str = "video", frame_times=None, task=None) -> PreparedInputs:
        """`frame_times` (when the frames were shown) is not read: positions here do not encode time. `task`:
        the dataset's prompt layout (aim.prompts.TaskPrompt; None: the generic multiple-choice one)."""
        self.check_modality(modality)
        if modality == "image":
            return self.prepare_image(frames, question, options, merger, scoring, task)
        return self.prepare_frames(frames, question, options, merger, scoring, modality, task)

    def prepare_frames(self, frames: np.ndarray, question: str, options: list[str], merger, scoring: str = "letter",
                       modality: str = "video", task=None) -> PreparedInputs:
        """Every frame one merger group of the same token grid."""
        before, after = self.prompt_ids(question, options, scoring, modality, task)
        encoded = self.encode_frames(self.pixel_values(frames, modality), needs=getattr(merger, "needs", ()), modality=modality)
        features = encoded.pop("features")
        return self.assemble_clip(before, self.reduce(merger, after, features, **encoded), len(features), after)

    def assemble_clip(self, before_ids, clip, frames: int, after_ids, grid_hw=None) -> PreparedInputs:
        """[before text][kept tokens of every frame, frame by frame][image newline][after text]. Frame f spans
        rows x cols positions unmerged; its kept token at within-frame index i sits at p + f * rows * cols + i
        (p: the text before), whatever each frame keeps (a frame may keep none), so merging leaves gaps and
        moves nothing; the newline and the text after sit where they sat unmerged. `grid_hw` is accepted for
        a uniform interface; LLaVA-OneVision's grid is fixed by its tower."""
        _, rows, cols = self.grid(frames)
        tokens_per_frame = rows * cols
        p = len(before_ids)
        visual = clip.features
        visual_pos = p + clip.frame.to(self.device) * tokens_per_frame + clip.token_index.to(self.device)
        newline_pos = p + frames * tokens_per_frame
        embeds = torch.cat(
            [
                self.embed_tokens(before_ids),
                visual,
                self.model.model.image_newline[None].to(visual.device, visual.dtype),
                self.embed_tokens(after_ids),
            ]
        )
        positions = torch.cat(
            [
                torch.arange(p, device=self.device),
                visual_pos,
                torch.arange(newline_pos, newline_pos + 1 + len(after_ids), device=self.device),
            ]
        )
        roles = torch.tensor(
            [PREFIX_TEXT] * p + [VISUAL] * len(visual) + [QUESTION_TEXT] * (1 + len(after_ids)),
            dtype=torch.int8,
        )
        return PreparedInputs(embeds[None], positions[None], roles, visual_per_group=clip.counts(frames))


def anyres_owner(config, image_size: tuple[int, int]) -> torch.Tensor:
    """Which anyres crop each cell of an image's packed grid comes from: [rows, cols] crop indices."""
    from transformers.models.llava_onevision.modeling_llava_onevision import get_anyres_image_grid_shape

    vc = config.vision_config
    side = vc.image_size // vc.patch_size
    nh, nw = get_anyres_image_grid_shape(list(image_size), config.image_grid_pinpoints, vc.image_size)
    return pack_anyres(config, torch.arange(nh * nw).repeat_interleave(side * side)[:, None], image_size)[0]


def pack_anyres(config, crops: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
    """The crops' token maps [crops, side*side, C] joined into the image's grid, unpadded to its aspect and
    shrunk past `anyres_max_N`, as the Hugging Face model packs them: [C, rows, cols]. Long tensors (crop
    ids) are shrunk by nearest cell, so each cell of the result names the crop it came from."""
    from transformers.models.llava_onevision.modeling_llava_onevision import (
        get_anyres_image_grid_shape,
        unpad_image,
    )

    vc = config.vision_config
    side = vc.image_size // vc.patch_size
    nh, nw = get_anyres_image_grid_shape(list(image_size), config.image_grid_pinpoints, vc.image_size)
    x = crops.reshape(nh, nw, side, side, -1).permute(4, 0, 2, 1, 3).reshape(-1, nh * side, nw * side)
    x = unpad_image(x, list(image_size))
    max_crops = int(config.vision_aspect_ratio.strip("anyres_max_"))
    _, h, w = x.shape
    ratio = math.sqrt(h * w / (max_crops * side**2))
    if ratio > 1.1:
        size = [int(h // ratio), int(w // ratio)]
        if x.dtype == torch.long:  # crop ids: the crop under each shrunk cell's centre
            x = F.interpolate(x[None].float(), size, mode="nearest-exact")[0].long()
        else:
            x = F.interpolate(x[None], size, mode="bilinear")[0]
    return x
