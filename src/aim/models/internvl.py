"""InternVL3 adapter (`InternVLForConditionalGeneration`, the `-hf` checkpoints: InternViT tower, pixel
shuffle, MLP projector, Qwen2.5 LLM).

Every tile the tower sees is 448 px: the tower's last hidden state without its [CLS] token is a 32 x 32
patch grid, the pixel shuffle (`downsample_ratio` 0.5) folds each 2x2 window of patches into one token of 4x
the width, and the projector (LayerNorm, Linear, GELU, Linear) maps it into the LLM: a 16 x 16 grid of 256
tokens per tile, in raster order. Our merger runs here on merger groups: an image's tiles one group each
([tiles, 256, D], `grid` (16, 16)), a video's frames one group each with all of their tiles (below).

Video (`tiling: lmms_eval`, the real preset's): as lmms-eval's internvl3 model runs InternVL3 (InternVL's
own video demo, `load_video`), every frame is tiled as an image is, with at most
max(1, min(max_patches, total_patches // frames)) tiles (lmms-eval's `max_num=12`, `total_max_num=64`: 2 at
32 frames, 8 at 8, 1 from 33 frames), plus a thumbnail when that gives more than one: a 16:9 frame is 2 x 1
tiles and a thumbnail, 3 x 256 = 768 tokens at 32 frames. `tiling: hf` (the toy presets') keeps the Hugging
Face processor's video path: one resized tile per frame. Either way each frame is one line,
`Frame{i}: <img><IMG_CONTEXT> x (256 x its tiles)</img>` (i from 1, lines joined by a newline), and **one
merger group**: its tiles' 16 x 16 grids one under another, [frames, tiles x 256, D], grid (16 x tiles, 16),
so a per-frame merger sees all of a frame's tokens and a clip reducer compares a frame's tile t with the next
frame's tile t (every frame of a video has the same tiles). Which frames: `frame_sampling: internvl` (the
real preset's), lmms-eval's `get_index`.

Single images (`modality="image"`): dynamic tiling. The image is resized to the grid of `cols` x `rows`
tiles whose aspect is closest to its own among the grids of `min_patches`..`max_patches` tiles and cut into
those tiles, row by row; when there is more than one, a thumbnail (the whole image resized to one tile)
follows them. Ties between grids of one aspect: `tiling: hf` as the -hf processor (`InternVLProcessor`,
GotOcr2's `get_optimal_tiled_canvas`: the larger grid only while the image's area exceeds half of it);
`tiling: lmms_eval` as lmms-eval's `dynamic_preprocess` (its candidates visited in the order a Python set of
them yields, a later tie taking over while the image's area exceeds half of that grid): small images then
get e.g. 2 x 2 tiles where the processor gives one (`lmms_eval_tile_grid`). Each image is one merger group
per tile. The prompt's
`<IMG_CONTEXT>` (what the chat template writes for an image) becomes `<img>` + 256 `<IMG_CONTEXT>` per tile
+ `</img>`. Pixels, `tiling: hf`: the Hugging Face image processor itself (PIL backend,
`GotOcr2ImageProcessorPil`: it needs no torchvision) with the preset's tiling bounds and normalization;
`tiling: lmms_eval` (images and video frames): PIL's bicubic resize to the grid's canvas, the tiles cropped
from it, the thumbnail a bicubic resize of the whole, each scaled to [0, 1] and normalized, as lmms-eval's
`dynamic_preprocess` and `build_transform`.

In both, the adapter writes the processor's text and tokenizes the whole prompt at once, so the unreduced
ids are the processor's; the context tokens' embeddings are then replaced by the tiles' (merged) tokens.
The frame labels and <img> / </img> markers are text: never merged, never pruned. With `chat_template:
true` the user's turn is wrapped in InternVL's `internvl2_5` conversation with its system message (`chat_wrap:
lmms_eval`, the preset's: what InternVL3's own chat(), which lmms-eval calls, writes; `INTERNVL2_5`) or in the
checkpoint's chat template (`hf`: no system turn; it writes `<video>\\n` for a video part and `<IMG_CONTEXT>\\n`
for an image part). Both give the same frame lines.

Positions: the LLM has 1-D RoPE. Unreduced, a token's position is its index in the processor's sequence;
kept visual tokens keep their original positions (a merged token sits at its representative's), text keeps
its own, so merging leaves gaps and moves nothing, as for LLaVA-OneVision. A clip reducer's frames may keep
different counts: each kept token at its own frame's context slot; a frame keeping none keeps its label and
markers (`splice`).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from aim.models import MODELS, PREFIX_TEXT, QUESTION_TEXT, VISUAL, PreparedInputs
from aim.models.base import VIDEO, Adapter, AdapterConfig, Conversation, square_frames

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
# InternVL's "internvl2_5" conversation (internvl_chat/internvl/conversation.py, SeparatorStyle.MPT), the template
# InternVL3's own code (`model.chat`, what lmms-eval's internvl3 model calls) uses, with its system message:
# the system turn, the user's turn, "<|im_start|>assistant\n". lmms-eval writes a video as "Frame{i}: <image>\n"
# per frame before the task's text (an image: "<image>\n"), and chat() makes each <image> "<img>", the tile's
# <IMG_CONTEXT> tokens, "</img>": the string aim's `<video>` placeholder expands to (`frame_text`).
INTERNVL2_5 = Conversation(
    system="你是书生·万象，英文名是InternVL，是由上海人工智能实验室、清华大学及多家合作单位联合开发的多模态大语言模型。",
    system_turn="<|im_start|>system\n{system}<|im_end|>\n",
    user_turn="<|im_start|>user\n{content}<|im_end|>\n<|im_start|>assistant\n")


@dataclass
class InternVLAdapterConfig(AdapterConfig):
    name: str = "internvl"
    pretrained: str = "OpenGVLab/InternVL3-8B-hf"
    chat_template: bool = True
    image_mean: list[float] = field(default_factory=lambda: list(IMAGENET_MEAN))
    image_std: list[float] = field(default_factory=lambda: list(IMAGENET_STD))
    # Dynamic tiling of a single image: the grids of min_patches..max_patches tiles are its candidates
    # (the processor's `min_patches` / `max_patches`, defaults 1 and 12 as InternVL's `max_num=12`).
    min_patches: int = 1
    max_patches: int = 12
    # lmms_eval: tile video frames and images as lmms-eval's internvl3 model does (module docstring); hf: as
    # the Hugging Face processor does (a video frame is one tile; its image tiling's tie rule)
    tiling: str = "lmms_eval"
    # lmms_eval tiling of a video: every frame gets at most max(1, min(max_patches, total_patches // frames))
    # tiles (lmms-eval's total_max_num=64)
    total_patches: int = 64
    # source video size (height, width) assumed where no video is decoded (aim.flops, aim.bench, budgets):
    # the tiles of a frame follow its aspect
    frame_size: list[int] = field(default_factory=lambda: [360, 640])
    frame_sampling: str = "internvl"  # lmms-eval's InternVL3 `get_index` (aim.data.video)

    def __post_init__(self):
        from aim.checks import check_choice, check_range

        super().__post_init__()
        check_range("min_patches", self.min_patches, 1)
        check_range("max_patches", self.max_patches, self.min_patches)
        check_choice("tiling", self.tiling, TILINGS)
        check_range("total_patches", self.total_patches, 1)
        if len(self.frame_size) != 2 or min(self.frame_size) < 1:
            raise ValueError(f"frame_size: must be [height, width] in pixels, got {self.frame_size}")


TILINGS = ("lmms_eval", "hf")


def lmms_eval_tile_grid(image_size: tuple[int, int], side: int, min_tiles: int, max_tiles: int) -> tuple[int, int]:
    """(rows, columns) of the tiles lmms-eval's `dynamic_preprocess` (InternVL's own) cuts an image of
    `image_size` (H, W) into: among the grids of min_tiles..max_tiles tiles, the one whose aspect (cols / rows)
    is nearest the image's; the candidates are visited in the order a Python set of them yields (built as
    lmms-eval builds it, from the grids sorted by tile count), and a later candidate as near as the best takes
    its place while the image's area exceeds half of that candidate's canvas."""
    height, width = image_size
    grids = {(c, r) for n in range(min_tiles, max_tiles + 1) for c in range(1, n + 1) for r in range(1, n + 1)
             if min_tiles <= c * r <= max_tiles}
    candidates = set(sorted(grids, key=lambda g: g[0] * g[1]))
    aspect, best, best_diff = width / height, (1, 1), float("inf")
    for cols, rows in candidates:
        diff = abs(aspect - cols / rows)
        if diff < best_diff:
            best, best_diff = (cols, rows), diff
        elif diff == best_diff and width * height > 0.5 * side * side * cols * rows:
            best = (cols, rows)
    return best[1], best[0]


def video_tile_limit(cfg, num_frames: int) -> int:
    """The most tiles one frame of a `num_frames`-frame video gets under lmms_eval tiling:
    max(1, min(max_patches, total_patches // num_frames)) (lmms-eval's `dynamic_max_num`)."""
    return max(1, min(cfg.max_patches, cfg.total_patches // max(num_frames, 1)))


def frame_text(num_frames: int, tokens_per_frame: int, context: str, start: str = "<img>", end: str = "</img>") -> str:
    """What the InternVL processor writes for a video of `num_frames` frames (its `replace_video_token`)."""
    return "\n".join(f"Frame{i + 1}: {start}{context * tokens_per_frame}{end}" for i in range(num_frames))


def frame_label_tokens(frame: int) -> list[str]:
    """The text tokens around frame `frame`'s (from 1) context tokens in Qwen2's tokenizer, which gives each
    digit a token of its own: `Frame`, the digits, `:`, ` `, `<img>`, then `</img>` (and the newline before
    the next frame's line, counted with that frame)."""
    return ["Frame", *str(frame), ":", " ", "<img>", "</img>"] + (["\n"] if frame > 1 else [])


@MODELS.register("internvl", config=InternVLAdapterConfig)
class InternVLAdapter(Adapter):
    config_class = InternVLAdapterConfig
    hf_model_class = "InternVLForConditionalGeneration"
    hf_config_class = "InternVLConfig"
    modalities = ("video", "image")
    lmms_eval_conversation = INTERNVL2_5

    def __init__(self, model, tokenizer, cfg: InternVLAdapterConfig):
        super().__init__(model, tokenizer, cfg)
        self.image_size = self.tower_resolution(model.config)
        self.mean = torch.tensor(cfg.image_mean).view(1, 3, 1, 1)
        self.std = torch.tensor(cfg.image_std).view(1, 3, 1, 1)

    # --- token layout ----------------------------------------------------------------------------
    @staticmethod
    def tower_resolution(hf_config) -> int:
        size = hf_config.vision_config.image_size
        size = size if isinstance(size, int) else size[0]
        return size

    @classmethod
    def tile_token_side(cls, hf_config) -> int:
        """Rows (= columns) of one tile's LLM tokens: the tower's patch grid shrunk by the pixel shuffle.
        448 px / patch 14 -> 32 x 32 patches -> 16 x 16 = 256 tokens per tile."""
        patch = hf_config.vision_config.patch_size
        patch = patch if isinstance(patch, int) else patch[0]
        return round(cls.tower_resolution(hf_config) // patch * hf_config.downsample_ratio)

    @classmethod
    def frame_tiles(cls, hf_config, cfg, num_frames: int, frame_size=None) -> int:
        """Tiles of each frame of a `num_frames`-frame video of `frame_size` (H, W; default the preset's):
        1 under hf tiling; under lmms_eval the grid within `video_tile_limit` and a thumbnail if it has more
        than one tile (a 16:9 frame at 32 frames: 2 x 1 + 1 = 3)."""
        if cfg.tiling == "hf":
            return 1
        limit = video_tile_limit(cfg, num_frames)
        rows, cols = cls.tile_grid(hf_config, cfg, tuple(frame_size or cfg.frame_size), limit)
        return rows * cols + (rows * cols > 1)

    @classmethod
    def feature_grid(cls, hf_config, cfg, num_frames: int, frame_size=None) -> tuple[int, int, int]:
        """(frames, rows, columns) of a video's LLM tokens, per frame its tiles' 16 x 16 grids one under
        another: (frames, 16 x tiles, 16), tiles from `frame_tiles` at `frame_size`."""
        side = cls.tile_token_side(hf_config)
        return num_frames, side * cls.frame_tiles(hf_config, cfg, num_frames, frame_size), side

    def grid(self, num_frames: int) -> tuple[int, int, int]:
        return self.feature_grid(self.model.config, self.cfg, num_frames)

    @property
    def tokens_per_frame(self) -> int:
        """Tokens of one tile (one tile of a video frame or of an image)."""
        return self.tile_token_side(self.model.config) ** 2

    @classmethod
    def tile_grid(cls, hf_config, cfg, image_size: tuple[int, int], max_tiles: int | None = None) -> tuple[int, int]:
        """(rows, columns) of the tiles an image of `image_size` (H, W) is cut into among the grids of
        min_patches..`max_tiles` tiles (default max_patches): the Hugging Face image processor's choice of
        canvas (`get_optimal_tiled_canvas`) under hf tiling, lmms-eval's (`lmms_eval_tile_grid`) under lmms_eval."""
        side = cls.tower_resolution(hf_config)
        low, high = cfg.min_patches, cfg.max_patches if max_tiles is None else max_tiles
        low = min(low, high)
        if cfg.tiling == "lmms_eval":
            return lmms_eval_tile_grid(tuple(image_size), side, low, high)
        from transformers.models.got_ocr2.image_processing_pil_got_ocr2 import get_optimal_tiled_canvas

        cols, rows = get_optimal_tiled_canvas(tuple(image_size), (side, side), low, high)
        return rows, cols

    @classmethod
    def image_tiles(cls, hf_config, cfg, image_size: tuple[int, int]) -> int:
        """How many tiles the tower sees for one image of `image_size` (H, W): its grid's tiles, and the
        thumbnail where there is more than one. What `aim.flops` counts for `flops.image_size`, each tile
        `feature_grid`'s tokens."""
        rows, cols = cls.tile_grid(hf_config, cfg, image_size)
        return rows * cols + (rows * cols > 1)

    # --- visual path -----------------------------------------------------------------------------
    def pixel_values(self, frames: np.ndarray, modality: str = "video") -> torch.Tensor:
        """uint8 RGB frames [T, H, W, 3] -> normalized tiles. hf tiling: [T, 3, S, S], one tile per frame, a
        bicubic resize with antialias of the uint8 frames (as torchvision's, which the Hugging Face video
        processor uses); lmms_eval: [T, tiles, 3, S, S], each frame tiled within `video_tile_limit`
        (`lmms_eval_tiles`), the frames kept apart so that each stays one merger group. One image [1, H, W, 3] -> its tiles [tiles, 3, S, S] (`image_pixel_values`)."""
        if modality == "image":
            return self.image_pixel_values(frames)
        if self.cfg.tiling == "lmms_eval":
            limit = video_tile_limit(self.cfg, len(frames))
            return torch.stack([self.lmms_eval_tiles(frame, limit) for frame in frames]).to(self.device, self.dtype)
        return square_frames(frames, self.image_size, self.mean, self.std).to(self.device, self.dtype)

    def lmms_eval_tiles(self, image: np.ndarray, max_tiles: int) -> torch.Tensor:
        """One uint8 RGB image [H, W, 3] -> its normalized tiles [tiles, 3, S, S] as lmms-eval's
        `dynamic_preprocess` + `build_transform`: PIL's bicubic resize to the grid's canvas (`tile_grid`), the
        tiles cropped row by row, a bicubic resize of the whole to one tile after them when there is more than
        one, each scaled to [0, 1] and normalized by the preset's mean and std."""
        from PIL import Image

        side = self.image_size
        rows, cols = self.tile_grid(self.model.config, self.cfg, image.shape[:2], max_tiles)
        picture = Image.fromarray(np.ascontiguousarray(image)).convert("RGB")
        canvas = picture.resize((cols * side, rows * side), Image.Resampling.BICUBIC)
        tiles = [canvas.crop((c * side, r * side, (c + 1) * side, (r + 1) * side)) for r in range(rows) for c in range(cols)]
        if len(tiles) > 1:
            tiles.append(picture.resize((side, side), Image.Resampling.BICUBIC))
        pixels = torch.from_numpy(np.stack([np.asarray(t) for t in tiles])).permute(0, 3, 1, 2).float() / 255
        return (pixels - self.mean) / self.std

    def image_pixel_values(self, image: np.ndarray) -> torch.Tensor:
        """One image [1, H, W, 3] -> [tiles, 3, S, S]: the grid's tiles row by row, then the thumbnail. hf
        tiling: by the Hugging Face image processor (PIL backend) with the preset's tiling bounds and
        normalization; lmms_eval: `lmms_eval_tiles` within max_patches."""
        from transformers.models.got_ocr2.image_processing_pil_got_ocr2 import GotOcr2ImageProcessorPil

        if image.ndim != 4 or len(image) != 1:
            raise ValueError(f"an image input is one image [1, H, W, 3], got shape {tuple(image.shape)}")
        cfg = self.cfg
        if cfg.tiling == "lmms_eval":
            return self.lmms_eval_tiles(image[0], cfg.max_patches).to(self.device, self.dtype)
        processor = GotOcr2ImageProcessorPil(
            size={"height": self.image_size, "width": self.image_size}, crop_to_patches=True,
            min_patches=cfg.min_patches, max_patches=cfg.max_patches, image_mean=list(cfg.image_mean),
            image_std=list(cfg.image_std))
        pixels = processor(images=[np.ascontiguousarray(image[0])], return_tensors="pt")["pixel_values"]
        return pixels.to(self.device, self.dtype)

    def tower_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The tower's hidden state at `vision_feature_layer`, without [CLS] under the "default" strategy:
        [tiles, patches, vision width] (the tiles of every frame, in order, for [T, tiles, 3, S, S] pixels)."""
        mcfg = self.model.config
        pixel_values = pixel_values.flatten(0, 1) if pixel_values.ndim == 5 else pixel_values
        out = self.model.model.vision_tower(pixel_values=pixel_values, output_hidden_states=mcfg.vision_feature_layer != -1)
        hidden = out.last_hidden_state if mcfg.vision_feature_layer == -1 else out.hidden_states[mcfg.vision_feature_layer]
        return hidden[:, 1:] if mcfg.vision_feature_select_strategy == "default" else hidden

    def project(self, tower_hidden: torch.Tensor, modality: str = "video") -> torch.Tensor:
        """The model's pixel shuffle and projector: [T, patches, vd] -> [T, tokens, D], tokens in raster order."""
        model = self.model.model
        t, patches, dim = tower_hidden.shape
        side = int(patches**0.5)
        shuffled = model.pixel_shuffle(tower_hidden.reshape(t, side, side, dim), scale_factor=self.model.config.downsample_ratio)
        return model.multi_modal_projector(shuffled.reshape(t, -1, shuffled.shape[-1]))

    def visual_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.per_frame(self.project(self.tower_features(pixel_values)), pixel_values)

    @staticmethod
    def per_frame(x: torch.Tensor, pixel_values: torch.Tensor) -> torch.Tensor:
        """Per-tile values [T x tiles, 256, ...] -> per frame [T, tiles x 256, ...] for a video's
        [T, tiles, 3, S, S] pixels (each frame one merger group); unchanged for one tile per group."""
        if pixel_values.ndim != 5:
            return x
        return x.reshape(pixel_values.shape[0], -1, *x.shape[2:])

    def encode_frames(self, pixel_values: torch.Tensor, needs=(), modality: str = "video") -> dict[str, torch.Tensor]:
        """Features per merger group: [tiles, 256, D] for an image's tiles or a video of one tile a frame,
        [frames, tiles x 256, D] for a tiled video ([frames, tiles, 3, S, S] pixels); as a merger asks
        (`needs`), `grid` (rows, cols) of a group's tokens ((16 x tiles, 16): its tiles one under another) and
        signals of the tower layer that produced the features, averaged over each token's 2x2 patches and
        grouped as the features: `metric`, its keys (heads concatenated) [groups, tokens, vd], and `attention`
        [groups, tokens], the head-averaged attention each patch receives from its tile's [CLS] query."""
        side = self.tile_token_side(self.model.config)
        tiles = pixel_values.shape[1] if pixel_values.ndim == 5 else 1
        grid = {"grid": (side * tiles, side)} if "grid" in needs else {}
        if not {"metric", "attention"} & set(needs):
            return {"features": self.visual_features(pixel_values), **grid}
        layers = self.model.model.vision_tower.encoder.layer
        # hidden_states[i] is the output of layer i - 1 (hidden_states[0]: the embeddings)
        producer = layers[self.model.config.vision_feature_layer % (len(layers) + 1) - 1].attention
        captured = {}
        hooks = [getattr(producer, f"{name}_norm").register_forward_hook(
                     lambda _m, _i, out, name=name: captured.__setitem__(name, out)) for name in ("q", "k")]
        try:
            hidden = self.tower_features(pixel_values)
        finally:
            for h in hooks:
                h.remove()
        out = {"features": self.per_frame(self.project(hidden), pixel_values), **grid}
        if "metric" in needs:
            out["metric"] = self.per_frame(self._pool_windows(captured["k"][:, 1:]), pixel_values)
        if "attention" in needs:
            q, k, heads = captured["q"], captured["k"], producer.num_heads
            n, p, d = k.shape
            qh = q[:, :1].view(n, 1, heads, d // heads).transpose(1, 2)  # the [CLS] query
            kh = k.view(n, p, heads, d // heads).transpose(1, 2)
            probs = torch.softmax((qh @ kh.transpose(-1, -2)).float() * producer.scale, -1).mean(1)[:, 0, 1:]
            out["attention"] = self.per_frame(self._pool_windows(probs[..., None].to(k.dtype))[..., 0], pixel_values)
        return out

    def _pool_windows(self, x: torch.Tensor) -> torch.Tensor:
        """Per-patch values [T, patches, C] -> the mean over each token's patch window [T, tokens, C]."""
        t, patches, c = x.shape
        side = int(patches**0.5)
        rows = self.tile_token_side(self.model.config)
        pooled = F.avg_pool2d(x.transpose(1, 2).reshape(t, c, side, side), side // rows)
        return pooled.flatten(2).transpose(1, 2)

    # --- text ------------------------------------------------------------------------------------
    def visual_token(self, modality: str = "video") -> str:
        """The processor's placeholder: for a video its tokenizer's `video_token`, which it expands per frame;
        for an image the context token itself (what the chat template writes), which it expands per tile."""
        if modality == "image":
            return self.context_token()
        return getattr(self.tokenizer, "video_token", None) or VIDEO

    def context_token(self) -> str:
        """The token that stands for one visual token in the sequence (the config's `image_token_id`)."""
        return self.tokenizer.convert_ids_to_tokens(self.model.config.image_token_id)

    def markers(self) -> tuple[str, str]:
        """The tokens the processor writes around each frame's, or an image's, context tokens: <img>, </img>."""
        tok = self.tokenizer
        return getattr(tok, "start_image_token", None) or "<img>", getattr(tok, "end_image_token", None) or "</img>"

    def video_text(self, num_frames: int, tiles: int = 1) -> str:
        """The frames' lines, each frame `tiles` tiles' context tokens."""
        return frame_text(num_frames, self.tokens_per_frame * tiles, self.context_token(), *self.markers())

    def image_text(self, num_tiles: int) -> str:
        """What the processor writes for an image of `num_tiles` tiles (its `replace_image_token`)."""
        start, end = self.markers()
        return start + self.context_token() * (self.tokens_per_frame * num_tiles) + end

    def input_ids(self, question: str, options: list[str], num_frames: int, scoring: str = "letter",
                  modality: str = "video", task=None, tiles: int = 1) -> list[int]:
        """The unreduced prompt's token ids: the prompt's placeholder replaced by the video's frames' text
        (`tiles` tiles each), or the image's (`num_frames` being its tiles), as the processor replaces it, and
        the whole string tokenized at once."""
        prompt = self.prompt_string(question, options, scoring, modality, task)
        text = self.image_text(num_frames) if modality == "image" else self.video_text(num_frames, tiles)
        return self.token_ids(prompt.replace(self.visual_token(modality), text, 1))

    # --- assembly --------------------------------------------------------------------------------
    @torch.no_grad()
    def prepare(self, frames: np.ndarray, question: str, options: list[str], merger, scoring: str = "letter",
                modality: str = "video", frame_times=None, task=None) -> PreparedInputs:
        """A video's frames or an image's tiles, each tile one merger group. The frames' text labels are their
        numbers (`Frame{i}:`), so `frame_times` is not read. `task`: the dataset's prompt layout
        (aim.prompts.TaskPrompt; None: the generic multiple-choice one)."""
        self.check_modality(modality)
        pixels = self.pixel_values(frames, modality)  # [tiles, 3, S, S], or a video's [frames, tiles, 3, S, S]
        tiles = pixels.shape[1] if pixels.ndim == 5 else 1
        ids = self.input_ids(question, options, len(pixels), scoring, modality, task, tiles)
        encoded = self.encode_frames(pixels, needs=getattr(merger, "needs", ()), modality=modality)
        features = encoded.pop("features")
        after = self.prompt_ids(question, options, scoring, modality, task)[1]
        return self.splice(ids, self.reduce(merger, after, features, **encoded), len(features))

    @classmethod
    def video_text_tokens(cls, hf_config, cfg, groups: int) -> int:
        """The frames' labels and markers (`Frame{i}: <img>`, `</img>`, the newlines), as Qwen2's tokenizer
        writes them: 246 tokens for 32 frames."""
        return sum(len(frame_label_tokens(i)) for i in range(1, groups + 1))

    def assemble_clip(self, before_ids, clip, frames: int, after_ids, grid_hw=None) -> PreparedInputs:
        """[before text][the frames, each `Frame{i}: <img>` its kept tokens `</img>`][after text] (aim.bench's
        synthetic inputs; `grid_hw` the frames' token grid, its tiles' grids one under another). Without a
        tokenizer (random weights, none cached) the frames' text is stand-in ids, as many as Qwen2's tokenizer
        writes (`frame_label_tokens`)."""
        tiles = grid_hw[0] * grid_hw[1] // self.tokens_per_frame if grid_hw is not None else 1
        if self.tokenizer is None:
            context = [self.model.config.image_token_id] * (self.tokens_per_frame * tiles)
            video = []
            for i in range(1, frames + 1):
                label = [0] * len(frame_label_tokens(i))  # the label before the context tokens, </img> (\n) after
                video += label[:-1 - (i > 1)] + context + label[len(label) - 1 - (i > 1):]
        else:
            video = self.token_ids(self.video_text(frames, tiles))
        return self.splice(list(before_ids) + video + list(after_ids), clip, frames)

    def splice(self, ids: list[int], clip, frames: int) -> PreparedInputs:
        """The unreduced sequence `ids` (context tokens where the frames' tokens go, frame by frame: `frames` of
        them) with a clip's kept tokens in place of its context tokens: kept token n at the position of context
        token `clip.token_index[n]` of frame `clip.frame[n]`; the other context tokens are dropped and every
        other token (the frames' labels and markers, also of a frame that keeps none) stays at its own position."""
        ids_t = torch.tensor(ids, device=self.device)
        context = ids_t == self.model.config.image_token_id
        count = int(context.sum())
        if count % (frames * self.tokens_per_frame):  # each frame (merger group) whole tiles
            raise ValueError(f"the prompt holds {count} visual tokens, the frames {frames} x a multiple of "
                             f"{self.tokens_per_frame}: does the prompt text contain the context token?")
        slots = context.nonzero().flatten().view(frames, -1)  # [frames, tokens per frame]
        visual_pos = slots[clip.frame.to(self.device), clip.token_index.to(self.device)]
        text_pos = (~context).nonzero().flatten()
        positions, order = torch.cat([text_pos, visual_pos]).sort()
        embeds = torch.cat([self.embed_tokens(ids_t[text_pos].tolist()), clip.features])[order]
        first_visual = int(slots[0, 0])
        text_roles = torch.where(text_pos < first_visual, PREFIX_TEXT, QUESTION_TEXT).to(torch.int8).cpu()
        roles = torch.cat([text_roles, torch.full((len(visual_pos),), VISUAL, dtype=torch.int8)])[order.cpu()]
        return PreparedInputs(embeds[None], positions[None], roles, visual_per_group=clip.counts(frames))
