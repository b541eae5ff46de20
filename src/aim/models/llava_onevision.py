"""LLaVA-OneVision adapter (`LlavaOnevisionForConditionalGeneration`: SigLIP tower, projector, Qwen2).

Video path as in the Hugging Face model: vision tower hidden state -> projector -> 2x2 bilinear pooling
per frame -> [frames, tokens, dim]; the merger runs here, then all frames are flattened and the
image-newline embedding is appended. The adapter assembles `inputs_embeds` itself (instead of passing
pixels to the HF forward) so that merging can sit between the projector and the LLM. Kept tokens keep
their original (1D) positions; a merged token sits at the position of the token that represents it.

Prompt: with `chat_template: true` (the real checkpoints' presets) the user's turn is wrapped in the
checkpoint's own chat template; the llava-hf checkpoints' template writes
`<|im_start|>user <video>\n{text}<|im_end|>\n<|im_start|>assistant\n`, and `chat_fallback` (used when
a checkpoint ships no template) is LLaVA-NeXT's Qwen2 conversation with its system turn. The text is
lmms-eval's multiple-choice prompt: question, lettered options, "Answer with the option's letter from
the given choices directly."
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from aim.models import MODELS, PREFIX_TEXT, QUESTION_TEXT, VISUAL, PreparedInputs
from aim.models.base import Adapter, AdapterConfig


@dataclass
class LlavaOnevisionConfig(AdapterConfig):
    name: str = "llava_onevision"
    pretrained: str = "aim:toy_llava_ov"
    # Defaults: the bundled toy model's plain prompt (the real checkpoints' presets use the chat format).
    prompt_template: str = "<s> user <video> {question} {options} answer :"
    likelihood_template: str = "<s> user <video> {question}"
    option_format: str = "{letter} {option}"
    option_separator: str = " "
    image_mean: list[float] = field(default_factory=lambda: [0.5, 0.5, 0.5])  # SigLIP's normalization
    image_std: list[float] = field(default_factory=lambda: [0.5, 0.5, 0.5])


@MODELS.register("llava_onevision", config=LlavaOnevisionConfig)
class LlavaOnevisionAdapter(Adapter):
    config_class = LlavaOnevisionConfig
    hf_model_class = "LlavaOnevisionForConditionalGeneration"
    hf_config_class = "LlavaOnevisionConfig"
    extra_text_tokens = 1  # the image-newline embedding after the video
    # The Qwen2 ChatML conversation LLaVA-OneVision was trained and evaluated with (LLaVA-NeXT's
    # "qwen_1_5" template, which lmms-eval uses for it), for checkpoints that ship no chat template.
    chat_fallback = ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
                     "<|im_start|>user\n{content}<|im_end|>\n<|im_start|>assistant\n")

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
    def pixel_values(self, frames: np.ndarray) -> torch.Tensor:
        """uint8 RGB frames [T, H, W, 3] -> normalized [T, 3, S, S] at the tower's resolution."""
        x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float() / 255.0
        if x.shape[-2:] != (self.image_size, self.image_size):
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False)
        return ((x - self.mean) / self.std).to(self.device, self.dtype)

    def tower_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Vision tower hidden state at the configured layer: [N, patches, vision_dim]."""
        mcfg = self.model.config
        out = self.model.model.vision_tower(pixel_values, output_hidden_states=True)
        hidden = out.hidden_states[mcfg.vision_feature_layer]
        if mcfg.vision_feature_select_strategy == "default":
            hidden = hidden[:, 1:]
        return hidden

    def project(self, tower_hidden: torch.Tensor) -> torch.Tensor:
        """Projector then the model's 2x2 bilinear pooling: [N, patches, vd] -> [N, tokens, D]."""
        return self.model.model.apply_pooling(self.model.model.multi_modal_projector(tower_hidden))

    def visual_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.project(self.tower_features(pixel_values))

    def encode_frames(self, pixel_values: torch.Tensor, needs=()) -> dict[str, torch.Tensor]:
        """Features [F, T, D] and, as a merger asks (`needs`), signals of the tower layer that produced
        them, pooled to the same token grid: `metric` (its keys, heads concatenated) [F, T, Dk] and
        `attention` [F, T], the attention each patch receives from the [CLS] query, or, for towers
        without a [CLS] token (SigLIP), the mean attention it receives from all patch queries."""
        if not needs:
            return {"features": self.visual_features(pixel_values)}
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
        out = {"features": self.project(hidden)}
        pool = self.model.model.apply_pooling
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
    def prepare(self, frames: np.ndarray, question: str, options: list[str], merger, scoring: str = "letter") -> PreparedInputs:
        before, after = self.prompt_text(question, options, scoring)
        encoded = self.encode_frames(self.pixel_values(frames), needs=getattr(merger, "needs", ()))
        merged = merger(encoded.pop("features"), **encoded)
        return self.assemble(self.token_ids(before), merged.features, merged.token_index, self.token_ids(after))

    def assemble(self, before_ids, visual, token_index, after_ids, grid_hw=None) -> PreparedInputs:
        """[before text][visual tokens of every frame][image newline][after text], with positions that
        leave the gaps of merged-away tokens, so kept tokens keep their original positions. `grid_hw` is
        accepted for a uniform interface; LLaVA-OneVision's grid is fixed by its tower."""
        num_frames, kept, dim = visual.shape
        _, rows, cols = self.grid(num_frames)
        tokens_per_frame = rows * cols
        p = len(before_ids)
        frame_offsets = torch.arange(num_frames, device=self.device)[:, None] * tokens_per_frame
        visual_pos = (p + frame_offsets + token_index.to(self.device)).reshape(-1)
        newline_pos = p + num_frames * tokens_per_frame
        embeds = torch.cat(
            [
                self.embed_tokens(before_ids),
                visual.reshape(-1, dim),
                self.model.model.image_newline[None].to(visual.dtype),
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
            [PREFIX_TEXT] * p + [VISUAL] * (num_frames * kept) + [QUESTION_TEXT] * (1 + len(after_ids)),
            dtype=torch.int8,
        )
        return PreparedInputs(embeds[None], positions[None], roles)
