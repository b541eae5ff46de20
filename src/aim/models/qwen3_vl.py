"""Qwen3-VL adapter (`Qwen3VLForConditionalGeneration`). The Qwen2-VL adapter with these differences:

- vision tower: 16 px patches, LayerNorm / GELU blocks attending within each temporal patch, learned
  position embeddings bilinearly interpolated to each frame's patch grid (inside the Hugging Face tower),
  then the 2x2 patch merger; normalization with mean = std = 0.5 (the checkpoint's processor);
- resize: the bounds hold the whole video, not one frame, as the Qwen3-VL video processor's `size`
  (`min_pixels` <= frames (rounded to pairs) x height x width <= `max_pixels`, its `smart_resize`);
- DeepStack: the tower's blocks `deepstack_visual_indexes` each feed their own 2x2 merger into the LLM's
  width, and level k is added to the hidden states at the visual positions after LLM layer k (k = 0 ..
  K - 1). The levels travel with the prefill (`PreparedInputs.llm_kwargs`), positioned by the visual
  tokens (the Hugging Face text model adds them);
- video layout as the Hugging Face 5.24 processor writes it: the chat template's
  `<|vision_start|><|video_pad|><|vision_end|>` keeps its outer markers, and the video token becomes, per
  temporal patch g, the text `<{time:.1f} seconds>`, `<|vision_start|>`, the patch's tokens and
  `<|vision_end|>` (time: the mean time of the patch's first and last frame: when the decoded video showed
  them (`frame_times`), else frame i at i / `model.fps`; 4.57's
  processor also dropped the outer markers);
- positions (interleaved M-RoPE in the LLM): each temporal patch is placed like an image, every token of
  patch g at (s, s + row, s + col), s being the position after the text before it, and the text after the
  patch continues at s + max(rows, cols). Time lives in the timestamp text, not in the temporal axis.

Merging runs per temporal patch as for Qwen2-VL (kept and merged tokens keep their representative's
(t, h, w) position, the text between patches never moves) and merges every DeepStack level with the same
groups and weights as the main features: the levels ride along as the merger's `carry` (`encode_frames`
gives them as a signal, so every caller of a merger passes them). A clip reducer's temporal patches may keep
different counts: each patch's kept tokens go between its own timestamp and markers, and a patch keeping
none leaves its timestamp and markers alone, still advancing the positions by max(rows, cols).

Pruning: the hook would have to prune the DeepStack additions with the tokens; it refuses instead. A
schedule may prune from layer K on, after the last addition (`prunable_from`; validation raises a
ConfigError naming the layer, before any model loads; a hook attached without validation fails in
`run_llm`, naming the layer). The paper's l1 = 14 on Qwen3-VL-8B (K = 3) is well past it.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from aim.models import MODELS, PREFIX_TEXT, QUESTION_TEXT, VISUAL, PreparedInputs
from aim.models.qwen2_vl import Qwen2VLAdapter, Qwen2VLAdapterConfig
from aim.tokens import Merged, clip_of

HALF = [0.5, 0.5, 0.5]


def patch_seconds(groups: int, temporal_patch: int, fps: float) -> list[float]:
    """Time of each temporal patch: the mean of its first and last frame's times (frame i at i / fps), as the
    processor's timestamps."""
    return [(2 * g * temporal_patch + temporal_patch - 1) / 2 / fps for g in range(groups)]


def seen_seconds(seconds: list[float], temporal_patch: int) -> list[float]:
    """Time of each temporal patch from the times its frames were shown: the mean of its first and last frame's
    (an odd count repeats the last frame), as the processor's timestamps from the sampled frames' indices."""
    seconds = list(seconds) + [seconds[-1]] * (-len(seconds) % temporal_patch)
    return [(seconds[i] + seconds[i + temporal_patch - 1]) / 2 for i in range(0, len(seconds), temporal_patch)]


def timestamp_tokens(seconds: float) -> int:
    """Tokens of `<{seconds:.1f} seconds>` in Qwen's tokenizer, which gives each digit and the point a token of
    its own: '<', the number's characters, ' seconds', '>'."""
    return len(f"{seconds:.1f}") + 3


@dataclass
class Qwen3VLAdapterConfig(Qwen2VLAdapterConfig):
    name: str = "qwen3_vl"
    pretrained: str = "Qwen/Qwen3-VL-8B-Instruct"
    # Bounds of the whole video (frames rounded to pairs x height x width), as the checkpoint's video
    # processor `size` (shortest_edge, longest_edge): a long video gets smaller frames.
    min_pixels: int = 4096
    max_pixels: int = 25165824
    fps: float = 2.0  # frames per second of the sampled frames: sets the timestamps written between patches
    image_mean: list[float] = field(default_factory=lambda: list(HALF))
    image_std: list[float] = field(default_factory=lambda: list(HALF))

    def __post_init__(self):
        from aim.checks import check_range

        super().__post_init__()
        check_range("fps", self.fps, 0, low_open=True)
        if self.total_pixels is not None:
            raise ValueError("total_pixels: Qwen3-VL bounds the whole video with min_pixels / max_pixels; "
                             f"leave total_pixels null, got {self.total_pixels}")


@MODELS.register("qwen3_vl", config=Qwen3VLAdapterConfig)
class Qwen3VLAdapter(Qwen2VLAdapter):
    config_class = Qwen3VLAdapterConfig
    hf_model_class = "Qwen3VLForConditionalGeneration"
    hf_config_class = "Qwen3VLConfig"
    modalities = ("video",)  # its image path (16 px patches, no timestamps) is not written yet
    batched_prefill = False  # every prefill carries its DeepStack levels (llm_kwargs): one sample at a time

    # --- token layout ----------------------------------------------------------------------------
    @classmethod
    def resized_size(cls, vision_config, cfg, height: int, width: int, num_frames: int) -> tuple[int, int]:
        from transformers.models.qwen3_vl.video_processing_qwen3_vl import smart_resize

        factor = vision_config.patch_size * vision_config.spatial_merge_size
        # the processor's own rule; one frame (which the processor refuses) is sized as its temporal patch of 2
        return smart_resize(max(num_frames, vision_config.temporal_patch_size), height, width,
                            vision_config.temporal_patch_size, factor, cfg.min_pixels, cfg.max_pixels)

    @staticmethod
    def prunable_from(hf_config) -> tuple[int, str]:
        levels = len(hf_config.vision_config.deepstack_visual_indexes)
        return max(1, levels), (f"its DeepStack adds visual features to the hidden states after layers 0..{levels - 1}, "
                                "which a pruned layer no longer holds")

    def group_seconds(self, groups: int, frame_times=None) -> list[float]:
        """Each temporal patch's time: from the times its frames were shown (`frame_times`, the decoded video's,
        of the frames the model sees), else frame i at i / `model.fps` (times unknown: aim.bench, frames given
        directly)."""
        if frame_times is None:
            return patch_seconds(groups, self.temporal_patch, self.cfg.fps)
        seen = [frame_times.seconds[i] for i in self.seen_frames(len(frame_times.seconds))]
        seconds = seen_seconds(seen, self.temporal_patch)
        if len(seconds) != groups:
            raise ValueError(f"frame_times: {len(frame_times.seconds)} frame times for {groups} temporal patches")
        return seconds

    def timestamp_ids(self, groups: int, frame_times=None) -> list[list[int]]:
        """Token ids of each temporal patch's `<{seconds:.1f} seconds>`. Without a tokenizer (random weights
        benchmarked where none is cached) stand-in ids, as many as Qwen's tokenizer writes."""
        seconds = self.group_seconds(groups, frame_times)
        if self.tokenizer is None:
            return [[0] * timestamp_tokens(t) for t in seconds]
        return [self.token_ids(f"<{t:.1f} seconds>") for t in seconds]

    @classmethod
    def video_text_tokens(cls, hf_config, cfg, groups: int) -> int:
        """Each temporal patch's timestamp, vision_start and vision_end."""
        seconds = patch_seconds(groups, hf_config.vision_config.temporal_patch_size, cfg.fps)
        return sum(timestamp_tokens(t) + 2 for t in seconds)

    # --- LLM -------------------------------------------------------------------------------------
    def run_llm(self, embeds, position_ids, cache=None, use_cache: bool = False, **llm_kwargs):
        """With DeepStack levels (a prefill), layers 1 .. K-1 must hold every token: a pruning hook that removed
        tokens there (a schedule that skipped validation) fails here, naming the layer, instead of deep
        inside the Hugging Face text model."""
        levels = len(llm_kwargs.get("deepstack_visual_embeds") or ())
        n = embeds.shape[1]

        def check(i):
            def hook(_layer, args, kwargs):
                if (args[0] if args else kwargs["hidden_states"]).shape[1] != n:
                    raise ValueError(f"decoder layer {i} holds pruned tokens, but Qwen3-VL's DeepStack adds visual features "
                                     f"after layers 0..{levels - 1}: prune from layer {levels} on")
            return hook

        handles = [self.decoder_layers[i].register_forward_pre_hook(check(i), with_kwargs=True) for i in range(1, levels)]
        try:
            return super().run_llm(embeds, position_ids, cache, use_cache, **llm_kwargs)
        finally:
            for h in handles:
                h.remove()

    # --- visual path -----------------------------------------------------------------------------
    def encode_frames(self, pixel_values: torch.Tensor, needs=(), modality: str = "video") -> dict[str, torch.Tensor]:
        """Qwen2-VL's features and signals, and `carry`: the DeepStack levels side by side [groups, rows*cols,
        levels * D] (each level the tower's own merger output, in the features' order), for the merger to
        merge with the features' groups and weights."""
        levels = []
        handle = self.model.model.visual.register_forward_hook(lambda _m, _a, out: levels.extend(out.deepstack_features))
        try:
            out = super().encode_frames(pixel_values, needs, modality)
        finally:
            handle.remove()
        g = pixel_values.shape[0]
        out["carry"] = torch.cat([level.reshape(g, -1, level.shape[-1]) for level in levels], -1)
        return out

    # --- assembly --------------------------------------------------------------------------------
    @torch.no_grad()
    def prepare(self, frames, question: str, options: list[str], merger, scoring: str = "letter",
                modality: str = "video", frame_times=None, task=None) -> PreparedInputs:
        """`frame_times`: when the frames were shown (`aim.data.video.FrameTimes`; None: unknown), written as
        the timestamps between temporal patches."""
        self.check_modality(modality)
        before, after = self.prompt_ids(question, options, scoring, modality, task)
        pixels = self.pixel_values(frames)
        encoded = self.encode_frames(pixels, needs=getattr(merger, "needs", ()))
        features = encoded.pop("features")
        try:
            clip = self.reduce(merger, after, features, **encoded)
        except TypeError as exc:
            if "carry" not in str(exc):
                raise
            raise ValueError(f"merger {type(merger).__name__} takes no `carry`: Qwen3-VL's DeepStack levels must be "
                             "merged with the features' groups (see aim.merging)") from exc
        if clip.carry is None:
            raise ValueError(f"merger {type(merger).__name__} returned no `carry`: Qwen3-VL's DeepStack levels must be "
                             "reduced with the features (see aim.merging)")
        grid_hw = (pixels.shape[1] // self.merge, pixels.shape[2] // self.merge)
        return self.assemble_clip(before, clip, len(features), after, grid_hw, frame_times)

    def assemble(self, before_ids, visual, token_index, after_ids, grid_hw=None, frame_times=None,
                 deepstack=None) -> PreparedInputs:
        """A per-frame result laid out (aim.bench's inputs): `deepstack` [levels, groups, kept, D], the merged
        DeepStack levels (None: zeros, e.g. for benchmarks of the prefill), as the result's carry."""
        carry = None if deepstack is None else deepstack.permute(1, 2, 0, 3).flatten(2)
        return self.assemble_clip(before_ids, clip_of(Merged(visual, token_index, carry)), visual.shape[0], after_ids,
                                  grid_hw, frame_times)

    def assemble_clip(self, before_ids, clip, groups: int, after_ids, grid_hw=None, frame_times=None) -> PreparedInputs:
        """[before text] then per temporal patch g [timestamp text, vision_start, its kept tokens, vision_end],
        then [after text], with the positions of the module docstring: kept token n of group g (`clip.frame`)
        at (s, s + row, s + col) of its cell `clip.token_index[n]`, s the position after the text before the
        patch; each patch, whatever it keeps (none: its timestamp and markers alone), advances s by
        max(rows, cols), so no text moves. `clip.carry` [N, levels * D]: the DeepStack levels reduced with the
        tokens (None: zeros)."""
        visual, dim = clip.features, clip.features.shape[-1]
        rows, cols = grid_hw if grid_hw is not None else self.grid(groups * self.temporal_patch)[1:]
        config = self.model.config
        opening = [ids + [config.vision_start_token_id] for ids in self.timestamp_ids(groups, frame_times)]
        frame, token_index = clip.frame.to(self.device), clip.token_index.to(self.device)
        parts, positions, roles, s = [], [], [], 0

        def text(ids, role):
            nonlocal s
            parts.append(self.embed_tokens(ids) if ids else visual.new_zeros(0, dim))
            positions.append(torch.arange(s, s + len(ids), device=self.device).expand(3, -1))
            roles.extend([role] * len(ids))
            s += len(ids)

        text(before_ids, PREFIX_TEXT)
        for g in range(groups):
            text(opening[g], PREFIX_TEXT)
            mine = frame == g
            index = token_index[mine]
            parts.append(visual[mine])
            positions.append(torch.stack([torch.full_like(index, s), s + index // cols, s + index % cols]))
            roles.extend([VISUAL] * len(index))
            s += max(rows, cols)
            text([config.vision_end_token_id], PREFIX_TEXT)
        text(after_ids, QUESTION_TEXT)
        roles = torch.tensor(roles, dtype=torch.int8)
        levels = len(config.vision_config.deepstack_visual_indexes)
        deepstack = (visual.new_zeros(levels, len(visual), dim) if clip.carry is None  # tokens come group by group
                     else clip.carry.reshape(len(visual), levels, dim).permute(1, 0, 2))
        llm_kwargs = {"visual_pos_masks": (roles == VISUAL).to(self.device)[None],
                      "deepstack_visual_embeds": list(deepstack)}
        return PreparedInputs(torch.cat(parts)[None], torch.cat(positions, 1)[:, None, :], roles, llm_kwargs,
                              visual_per_group=clip.counts(groups))
