"""LLaVA-OneVision adapter (`LlavaOnevisionForConditionalGeneration`: SigLIP tower, projector, Qwen2).

Video path as in the Hugging Face model: vision tower hidden state -> projector -> 2x2 bilinear pooling
per frame -> [frames, tokens, dim]; the merger runs here, then all frames are flattened and the
image-newline embedding is appended. The adapter assembles `inputs_embeds` itself (instead of passing
pixels to the HF forward) so that merging can sit between the projector and the LLM.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from aim.models import MODELS, PREFIX_TEXT, QUESTION_TEXT, VISUAL, PreparedInputs

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
ATTENTION = ("sdpa", "eager")


@dataclass
class LlavaOnevisionConfig:
    name: str = "llava_onevision"
    pretrained: str = "aim:toy_llava_ov"  # a local dir, a hub id, or aim:<bundled asset>
    random_init: bool = False  # build from the checkpoint's config with random weights
    dtype: str = "float32"
    device: str = "cpu"
    attn_implementation: str = "sdpa"
    prompt_template: str = "<s> user <video> {question} {options} answer :"
    # eval.mode=likelihood: the prompt whose next token is scored against each option's text
    likelihood_template: str = "<s> user <video> {question}"
    option_format: str = "{letter} {option}"
    image_mean: list[float] = field(default_factory=lambda: [0.5, 0.5, 0.5])
    image_std: list[float] = field(default_factory=lambda: [0.5, 0.5, 0.5])

    def __post_init__(self):
        from aim.config import check_choice

        check_choice("dtype", self.dtype, DTYPES)
        check_choice("attn_implementation", self.attn_implementation, ATTENTION)
        for name in ("prompt_template", "likelihood_template"):
            if "<video>" not in getattr(self, name):
                raise ValueError(f"{name}: must contain the <video> placeholder")


# Published architectures, for random-weight runs without a download (`pretrained: arch:<name>`):
# the numbers of the llava-hf LLaVA-OneVision checkpoints (SigLIP-so400m tower truncated to 26 layers,
# 384 px, patch 14 -> 27x27 patches -> 14x14 = 196 tokens per video frame after pooling).
SIGLIP_SO400M = dict(hidden_size=1152, intermediate_size=4304, num_hidden_layers=26, num_attention_heads=16,
                     image_size=384, patch_size=14)
ARCHITECTURES = {
    "llava-onevision-qwen2-0.5b": dict(
        vision=SIGLIP_SO400M,
        text=dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                  num_key_value_heads=2, vocab_size=151936, rope_theta=1000000.0, max_position_embeddings=32768),
    ),
    "llava-onevision-qwen2-7b": dict(
        vision=SIGLIP_SO400M,
        text=dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
                  num_key_value_heads=4, vocab_size=152064, rope_theta=1000000.0, max_position_embeddings=32768),
    ),
}


def architecture_config(name: str):
    from transformers import LlavaOnevisionConfig as HFConfig
    from transformers import Qwen2Config, SiglipVisionConfig

    if name not in ARCHITECTURES:
        raise ValueError(f"model.pretrained: unknown architecture 'arch:{name}'; known: {', '.join(ARCHITECTURES)}")
    arch = ARCHITECTURES[name]
    return HFConfig(vision_config=SiglipVisionConfig(**arch["vision"]), text_config=Qwen2Config(**arch["text"]),
                    vision_feature_layer=-1, vision_feature_select_strategy="full")


def resolve_pretrained(path: str) -> str:
    if path.startswith("aim:"):
        from aim.toy import asset_dir

        return str(asset_dir(path[4:]))
    return path


@MODELS.register("llava_onevision", config=LlavaOnevisionConfig)
class LlavaOnevisionAdapter:
    def __init__(self, model, tokenizer, cfg: LlavaOnevisionConfig):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.cfg = cfg
        self.device = torch.device(cfg.device)
        self.dtype = DTYPES[cfg.dtype]
        self.model.to(self.device, self.dtype)
        vc = model.config.vision_config
        self.image_size = vc.image_size
        self.patch_grid = vc.image_size // vc.patch_size
        self.mean = torch.tensor(cfg.image_mean).view(1, 3, 1, 1)
        self.std = torch.tensor(cfg.image_std).view(1, 3, 1, 1)

    @classmethod
    def from_config(cls, **kwargs) -> "LlavaOnevisionAdapter":
        from transformers import AutoConfig, AutoTokenizer, LlavaOnevisionForConditionalGeneration

        cfg = LlavaOnevisionConfig(**kwargs)
        if cfg.pretrained.startswith("arch:"):  # an architecture only: random weights, no tokenizer
            if not cfg.random_init:
                raise ValueError(f"model.pretrained: {cfg.pretrained} has no weights; set model.random_init=true")
            hf_config = architecture_config(cfg.pretrained[5:])
            hf_config._attn_implementation = cfg.attn_implementation
            return cls(LlavaOnevisionForConditionalGeneration(hf_config), None, cfg)
        path = resolve_pretrained(cfg.pretrained)
        if cfg.random_init:
            hf_config = AutoConfig.from_pretrained(path)
            hf_config._attn_implementation = cfg.attn_implementation
            model = LlavaOnevisionForConditionalGeneration(hf_config)
        else:
            model = LlavaOnevisionForConditionalGeneration.from_pretrained(
                path, dtype=DTYPES[cfg.dtype], attn_implementation=cfg.attn_implementation
            )
        return cls(model, AutoTokenizer.from_pretrained(path), cfg)

    # --- structure -------------------------------------------------------------------------------
    @property
    def language_model(self):
        return self.model.model.language_model

    @property
    def decoder_layers(self):
        return self.language_model.layers

    @property
    def num_layers(self) -> int:
        return len(self.decoder_layers)

    @property
    def text_config(self):
        return self.model.config.text_config

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

    # --- text ------------------------------------------------------------------------------------
    def prompt_text(self, question: str, options: list[str], scoring: str = "letter") -> tuple[str, str]:
        """The prompt split at the video placeholder: (text before the video, text after it). Scoring by
        likelihood uses the template without the options (each option is a candidate continuation)."""
        letters = [chr(ord("A") + i) for i in range(len(options))]
        opts = " ".join(self.cfg.option_format.format(letter=l, option=o) for l, o in zip(letters, options))
        template = self.cfg.likelihood_template if scoring == "likelihood" else self.cfg.prompt_template
        before, after = template.format(question=question, options=opts).split("<video>")
        return before.strip(), after.strip()

    def token_ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False).input_ids if text else []

    def option_text_ids(self, options: list[str]) -> list[int]:
        """The single token of each option's text, for likelihood scoring."""
        ids = [self.token_ids(o) for o in options]
        if any(len(i) != 1 for i in ids):
            raise ValueError("eval.mode=likelihood scores single-token options only; "
                             f"these tokenize to {[len(i) for i in ids]} tokens: use eval.mode=letter")
        return [i[0] for i in ids]

    def option_token_ids(self, num_options: int) -> list[int]:
        ids = [self.token_ids(chr(ord("A") + i)) for i in range(num_options)]
        if any(len(i) != 1 for i in ids):
            raise ValueError(f"option letters must be single tokens for this tokenizer, got {ids}")
        return [i[0] for i in ids]

    def embed_tokens(self, ids: list[int]) -> torch.Tensor:
        return self.language_model.embed_tokens(torch.tensor([ids], dtype=torch.long, device=self.device))[0]

    # --- assembly --------------------------------------------------------------------------------
    @torch.no_grad()
    def prepare(self, frames: np.ndarray, question: str, options: list[str], merger, scoring: str = "letter") -> PreparedInputs:
        before, after = self.prompt_text(question, options, scoring)
        encoded = self.encode_frames(self.pixel_values(frames), needs=getattr(merger, "needs", ()))
        merged = merger(encoded.pop("features"), **encoded)
        return self.assemble(self.token_ids(before), merged.features, merged.token_index, self.token_ids(after))

    def assemble(self, before_ids, visual, token_index, after_ids) -> PreparedInputs:
        """[before text][visual tokens of every frame][image newline][after text], with positions that
        leave the gaps of merged-away tokens, so kept tokens keep their original positions."""
        num_frames, kept, dim = visual.shape
        tokens_per_frame = self.patch_grid // 2 + self.patch_grid % 2
        tokens_per_frame *= tokens_per_frame
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

    # --- LLM -------------------------------------------------------------------------------------
    def run_llm(self, embeds: torch.Tensor, position_ids: torch.Tensor, cache=None, use_cache: bool = False):
        """One call of the decoder stack. The explicit all-ones attention mask matters: without a mask and
        a cache, transformers 5 reads any jump in position_ids as the start of another packed sequence
        and attends block-diagonally (masking_utils.find_packed_sequence_indices), which would cut the
        text off from the video as soon as merging leaves gaps in the positions."""
        past = cache.get_seq_length() if cache is not None else 0
        mask = torch.ones((embeds.shape[0], past + embeds.shape[1]), dtype=torch.long, device=self.device)
        return self.language_model(
            inputs_embeds=embeds, position_ids=position_ids, attention_mask=mask, cache=cache, use_cache=use_cache
        )

    @torch.no_grad()
    def prefill_logits(self, inputs: PreparedInputs) -> torch.Tensor:
        """LLM prefill (no cache kept) and the next-token logits at the last position: [vocab]."""
        out = self.run_llm(inputs.inputs_embeds, inputs.position_ids)
        return self.model.lm_head(out.last_hidden_state[0, -1]).float()

    def synchronize(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @torch.no_grad()
    def generate_ids(self, inputs: PreparedInputs, max_new_tokens: int) -> list[int]:
        """Greedy decoding with the KV cache. Positions continue after the last prompt position, so
        they stay right when merging left gaps in the visual positions."""
        out = self.run_llm(inputs.inputs_embeds, inputs.position_ids, use_cache=True)
        cache, position = out.cache, int(inputs.position_ids[0, -1])
        next_id = int(self.model.lm_head(out.last_hidden_state[0, -1]).argmax())
        ids = [next_id]
        eos = self.tokenizer.eos_token_id
        while len(ids) < max_new_tokens and next_id != eos:
            position += 1
            out = self.run_llm(
                self.embed_tokens([next_id])[None], torch.tensor([[position]], device=self.device), cache, True
            )
            cache = out.cache
            next_id = int(self.model.lm_head(out.last_hidden_state[0, -1]).argmax())
            ids.append(next_id)
        return ids

    def generate_text(self, inputs: PreparedInputs, max_new_tokens: int) -> str:
        return self.tokenizer.decode(self.generate_ids(inputs, max_new_tokens), skip_special_tokens=True)
