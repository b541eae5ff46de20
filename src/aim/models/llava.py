"""LLaVA-1.5 adapter (`LlavaForConditionalGeneration`: CLIP ViT-L/14 at 336 px, a two-layer MLP projector,
and a Llama LLM, Vicuna-7B in llava-hf/llava-1.5-7b-hf).

Visual path as in the Hugging Face model: the CLIP hidden state of `vision_feature_layer` (-2, the
penultimate layer), its [CLS] token dropped (the `default` feature strategy), the projector: 24 x 24 = 576
tokens per image, no pooling and no image-newline token. The merger runs per image ([images, 576, D]);
the tokens are spliced in place of the prompt's one <image> token. Kept tokens keep their original 1D
positions; a merged token sits at the position of the token that represents it (a clip reducer's images
may keep different counts, some none: each kept token in its own image's 576-position span). The tower path (hidden
state, the tower signals a merger asks for) is the LLaVA-OneVision adapter's: the same Hugging Face
structure, but CLIP has a [CLS] token, so `attention` is the [CLS] query's attention to each patch at the
feature layer (what LLaVA-PruMerge ranks by) and `metric` that layer's keys of the patches.

A video is taken as a sequence of images (every frame 576 tokens, all in place of the one <image>
token, one merger group per frame): LLaVA-1.5 was not trained on video; this only lets the video
benchmarks run on it.

Preprocessing (ours, with PIL, equal to the Hugging Face CLIP/LLaVA image processors):
- `image_aspect: pad` (default): pad the image to a square with the mean colour, then resize to 336 px
  (bicubic). This is LLaVA-1.5's own `image_aspect_ratio: pad`, what it was trained with and what
  lmms-eval's `llava` model evaluates with; the llava-hf processor does it with `do_pad=True`.
- `image_aspect: crop`: the llava-hf processor's default (`do_pad=False`): shortest edge resized to 336
  px (bicubic), then a centre crop of 336 x 336, which cuts off the sides of non-square images.
Then scaling to [0, 1] and CLIP's normalization.

Prompt: the user's turn in LLaVA's `vicuna_v1` conversation (`chat_wrap: lmms_eval`, the preset's: lmms-eval's
llava model's default, `VICUNA_V1`: its system sentence, then `USER: <image>\\n{text} ASSISTANT:`) or in the
checkpoint's chat template (`chat_wrap: hf`); llava-hf's writes `USER: <image>\\n{text} ASSISTANT:` (no system
sentence), and `chat_fallback` is that same format. The whole prompt is tokenized at
once, as the Hugging Face processor does (so the Llama tokenizer's BOS and its handling of the spaces
around <image> are its own), and split at the image token.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from aim.models import MODELS, PREFIX_TEXT, QUESTION_TEXT, VISUAL, PreparedInputs
from aim.models.base import AdapterConfig, Conversation
from aim.models.llava_onevision import LlavaOnevisionAdapter

CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
IMAGE_ASPECTS = ("pad", "crop")
# LLaVA's "vicuna_v1" conversation (llava/conversation.py, SeparatorStyle.TWO: sep " ", sep2 "</s>"), the default
# conv_template of lmms-eval's llava model (liuhaotian/llava-v1.5-7b): the system sentence, " USER: ", the
# user's turn ("<image>\n" + the task's text), " ASSISTANT:". The tokenizer adds Llama's BOS before it.
VICUNA_V1 = Conversation(
    system="A chat between a curious user and an artificial intelligence assistant. "
           "The assistant gives helpful, detailed, and polite answers to the user's questions.",
    system_turn="{system} ", user_turn="USER: {content} ASSISTANT:")


@dataclass
class LlavaAdapterConfig(AdapterConfig):
    name: str = "llava"
    pretrained: str = "llava-hf/llava-1.5-7b-hf"
    chat_template: bool = True
    prompt_template: str = "<image>\n{prompt}"
    likelihood_template: str = "<image>\n{prompt}"
    image_aspect: str = "pad"  # pad: LLaVA-1.5's own (mean-colour square); crop: llava-hf's default centre crop
    image_mean: list[float] = field(default_factory=lambda: list(CLIP_MEAN))
    image_std: list[float] = field(default_factory=lambda: list(CLIP_STD))

    def __post_init__(self):
        from aim.checks import check_choice

        super().__post_init__()
        check_choice("image_aspect", self.image_aspect, IMAGE_ASPECTS)


def preprocess_image(image: np.ndarray, size: int, aspect: str, mean, std) -> torch.Tensor:
    """One uint8 RGB image [H, W, 3] -> normalized [3, size, size] float32, as the Hugging Face
    LlavaImageProcessor (PIL backend) computes it: optional mean-colour square padding (the image
    centred), bicubic resize of the shortest edge to `size` (PIL), centre crop, /255, normalize."""
    from PIL import Image

    img = Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8))
    if aspect == "pad" and img.width != img.height:
        side = max(img.size)
        canvas = Image.new("RGB", (side, side), tuple(int(m * 255) for m in mean))
        canvas.paste(img, ((side - img.width) // 2, (side - img.height) // 2))
        img = canvas
    w, h = img.size
    short, long = min(w, h), max(w, h)
    new_long = int(size * long / short)
    img = img.resize((size, new_long) if w <= h else (new_long, size), Image.Resampling.BICUBIC)
    x = np.asarray(img)
    top, left = (x.shape[0] - size) // 2, (x.shape[1] - size) // 2
    x = torch.from_numpy(x[top:top + size, left:left + size].astype(np.float64) / 255.0).float().permute(2, 0, 1)
    return (x - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)


@MODELS.register("llava", config=LlavaAdapterConfig)
class LlavaAdapter(LlavaOnevisionAdapter):
    config_class = LlavaAdapterConfig
    hf_model_class = "LlavaForConditionalGeneration"
    hf_config_class = "LlavaConfig"
    extra_text_tokens = 0
    modalities = ("image", "video")
    image_layout = None  # one fixed token grid whatever the image size (no anyres crops)
    chat_fallback = "USER: {content} ASSISTANT:"  # llava-hf's LLaVA-1.5 conversation
    lmms_eval_conversation = VICUNA_V1

    def __init__(self, model, tokenizer, cfg: LlavaAdapterConfig):
        super().__init__(model, tokenizer, cfg)
        self.tokens_per_image = self.patch_grid**2

    @staticmethod
    def feature_grid(hf_config, cfg, num_frames: int) -> tuple[int, int, int]:
        """(images, rows, columns) of the visual tokens: the tower's patch grid, 336 px / patch 14 -> 24x24."""
        vc = hf_config.vision_config
        side = vc.image_size // vc.patch_size
        return num_frames, side, side

    # --- visual path -----------------------------------------------------------------------------
    def pixel_values(self, frames: np.ndarray, modality: str = "image") -> torch.Tensor:
        """uint8 RGB images (or frames) [N, H, W, 3] -> normalized [N, 3, S, S]."""
        cfg = self.cfg
        x = torch.stack([preprocess_image(f, self.image_size, cfg.image_aspect, cfg.image_mean, cfg.image_std)
                         for f in frames])
        return x.to(self.device, self.dtype)

    def pool_tokens(self, x: torch.Tensor, modality: str = "image") -> torch.Tensor:
        return x  # LLaVA-1.5 feeds every patch token to the LLM

    # --- text ------------------------------------------------------------------------------------
    def visual_token(self, modality: str = "image") -> str:
        return self.tokenizer.convert_ids_to_tokens(self.model.config.image_token_id)  # frames are images too

    def prompt_string(self, question, options, scoring="letter", modality="image", task=None) -> str:
        return super().prompt_string(question, options, scoring, "image", task)

    def prompt_ids(self, question, options, scoring="letter", modality="image", task=None) -> tuple[list[int], list[int]]:
        """The whole prompt tokenized as the processor does (special tokens such as Llama's BOS
        included), split at the image token."""
        text = self.prompt_string(question, options, scoring, task=task)
        self.token_ids("")  # a clear error when there is no tokenizer
        ids = self.tokenizer(text, add_special_tokens=True).input_ids
        image_id = self.model.config.image_token_id
        if ids.count(image_id) != 1:
            raise ValueError(f"the prompt must tokenize to one image token ({image_id}), got {ids.count(image_id)}")
        i = ids.index(image_id)
        return ids[:i], ids[i + 1:]

    # --- assembly --------------------------------------------------------------------------------
    @torch.no_grad()
    def prepare(self, frames: np.ndarray, question: str, options: list[str], merger, scoring: str = "letter",
                modality: str = "image", frame_times=None, task=None) -> PreparedInputs:
        """An image or a video's frames alike: every image one merger group of 576 tokens (`frame_times`
        is not read)."""
        self.check_modality(modality)
        return self.prepare_frames(frames, question, options, merger, scoring, modality, task)

    def assemble_clip(self, before_ids, clip, images: int, after_ids, grid_hw=None) -> PreparedInputs:
        """[before text][kept tokens, image by image][after text]. Image f spans 576 positions unmerged; its
        kept token at index i sits at p + f * 576 + i (p: the text before), whatever each image keeps (one may
        keep none), so merging leaves gaps and the text after never moves. `grid_hw` is accepted for a
        uniform interface; the grid is fixed by the tower."""
        p = len(before_ids)
        visual_pos = p + clip.frame.to(self.device) * self.tokens_per_image + clip.token_index.to(self.device)
        after_start = p + images * self.tokens_per_image
        embeds = torch.cat([self.embed_tokens(before_ids), clip.features, self.embed_tokens(after_ids)])
        positions = torch.cat([
            torch.arange(p, device=self.device),
            visual_pos,
            torch.arange(after_start, after_start + len(after_ids), device=self.device),
        ])
        roles = torch.tensor([PREFIX_TEXT] * p + [VISUAL] * len(visual_pos) + [QUESTION_TEXT] * len(after_ids),
                             dtype=torch.int8)
        return PreparedInputs(embeds[None], positions[None], roles, visual_per_group=clip.counts(images))
