"""What every model adapter shares: its config fields, loading (a checkpoint, or an architecture with random
weights), the prompt (plain, or in the checkpoint's chat format), and the LLM calls (prefill, decoding).

A subclass supplies the visual path: `pixel_values`, `encode_frames`, `prepare`, `assemble` and the
`feature_grid` of its visual tokens (what `aim.flops` and `aim.bench` use instead of decoding a video),
and names the `modalities` it takes: a sample's visual input is a video (frames [T, H, W, 3]) or an
image (one image, [1, H, W, 3]); the evaluation loop passes the sample's modality to `prepare`, and its
`frame_times` (when a decoded video's frames were shown, `aim.data.video.FrameTimes`; None for images and
frames of unknown time), which models with absolute time read (Qwen2.5-VL) and the others ignore.

Every adapter calls the merger through `reduce` (aim.merging's `reduce_clip`) and lays out its result, a
`ClipReduced`, with `assemble_clip`: the kept tokens of each merger group (a video's frame or temporal patch,
an image's tile or crop) at their own group's positions, groups keeping different counts, a group keeping none
leaving only its text (labels, timestamps, markers), which never moves. `assemble` is the same for a
per-frame result ([groups, K, D] at within-group indices [groups, K]).
"""
from __future__ import annotations

import json
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from aim.prompts import GENERIC_MC, TaskPrompt
from aim.tokens import ClipReduced, Merged, clip_of, reduce_clip

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
ATTENTION = ("sdpa", "eager")
# Where the visual input goes in `prompt_template` / `likelihood_template`: either spelling, once. The
# sample's modality (not the spelling) decides which of the model's tokens it becomes.
VIDEO = "<video>"
IMAGE = "<image>"
PLACEHOLDERS = (VIDEO, IMAGE)
PROMPT = "{prompt}"  # where the task's text (the dataset's `aim.prompts.TaskPrompt`) goes in a prompt template


@dataclass
class AdapterConfig:
    """Fields every model preset has (`conf/model/*.yaml`)."""

    name: str = ""
    pretrained: str = ""  # a local dir, a hub id, or aim:<bundled asset>
    random_init: bool = False  # build the architecture with random weights (nothing downloaded)
    # load only safetensors weights; false also accepts pickled PyTorch weights (pytorch_model.bin), which
    # can run code when unpickled: only for a checkpoint you trust that has no safetensors
    use_safetensors: bool = True
    # Keyword arguments of the Hugging Face config class (LlavaOnevisionConfig, Qwen2VLConfig, with
    # text_config / vision_config as nested dicts): what `random_init` builds and what `aim.flops` counts,
    # without reading `pretrained`. When empty, both read the config.json of `pretrained`.
    architecture: dict[str, Any] | None = None
    dtype: str = "float32"
    device: str = "cpu"
    attn_implementation: str = "sdpa"
    # false: `prompt_template` is the whole prompt. true: it is the user's turn, wrapped in the checkpoint's
    # chat template (the processor's, else the tokenizer's; the adapter's built-in format when it has none).
    chat_template: bool = False
    # a system turn before the user's in the checkpoint's chat template (None: the template's own default, if
    # any): lmms-eval's Qwen2-VL / Qwen2.5-VL / Qwen3-VL model classes send "You are a helpful assistant."
    system_prompt: str | None = None
    # Where the visual input (<video> or <image>) and the task's text ({prompt}: the question, options and
    # instructions as the dataset lays them out, `aim.prompts.TaskPrompt`) go in the user's turn; lmms-eval
    # puts the visual first, then a newline.
    prompt_template: str = "<video>\n{prompt}"
    # eval.mode=likelihood: the prompt whose next token is scored against each option's text (the task's text
    # without the options)
    likelihood_template: str = "<video>\n{prompt}"
    # the decoder layers' bodies compiled or graph-captured, static shapes per input layout (aim.models.compiled):
    # none | default (torch.compile, CPU or GPU) | reduce-overhead (torch.compile's CUDA graphs) | cuda_graphs
    # (hand-captured CUDA graphs); the last two need device=cuda. Cache-free prefills only (decoding stays eager).
    compile: str = "none"

    def __post_init__(self):
        from aim.checks import check_choice
        from aim.models.compiled import check_compile

        check_choice("dtype", self.dtype, DTYPES)
        check_choice("attn_implementation", self.attn_implementation, ATTENTION)
        check_compile(self.compile, self.device)
        for name in ("prompt_template", "likelihood_template"):
            if sum(getattr(self, name).count(p) for p in PLACEHOLDERS) != 1:
                raise ValueError(f"{name}: must contain the visual placeholder ({VIDEO} or {IMAGE}) once")
            if getattr(self, name).count(PROMPT) != 1:
                raise ValueError(f"{name}: must contain the task's text {PROMPT} once (the question, its options and "
                                 f"instructions, laid out by the dataset), got {getattr(self, name)!r}")
        if self.random_init is False and not self.pretrained:
            raise ValueError("pretrained: empty; give a checkpoint (local dir or hub id) or set random_init=true "
                             "with an architecture")
        if self.random_init and not self.pretrained and not self.architecture:
            raise ValueError("architecture: random_init needs an architecture or a pretrained config to build")


def square_frames(frames, size: int, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 RGB frames [T, H, W, 3] -> normalized float [T, 3, size, size]: torchvision's bicubic resize
    with antialias (as the Hugging Face video processors do; on CPU it interpolates the uint8 frames and
    returns uint8), then (x / 255 - mean) / std."""
    import numpy as np
    import torch.nn.functional as F

    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).contiguous()
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False, antialias=True)
    return (x.float() / 255.0 - mean) / std


def resolve_pretrained(path: str) -> str:
    """`aim:<name>` is a model bundled with the package (src/aim/assets/<name>)."""
    if path.startswith("aim:"):
        from aim.toy import asset_dir

        return str(asset_dir(path[4:]))
    return path


def check_local_dir(path: str) -> None:
    """A `pretrained` written as a path (not a hub id `org/name`) must be a directory: ValueError naming it."""
    if path.startswith(("/", "./", "../", "~")) and not Path(path).expanduser().is_dir():
        raise ValueError(f"pretrained: {path} is no directory; give a checkpoint dir or a hub id (org/name)")


SAFETENSORS_FILES = ("model.safetensors", "model.safetensors.index.json")
PICKLED_FILES = ("pytorch_model.bin", "pytorch_model.bin.index.json")


def check_weights(cfg: AdapterConfig) -> None:
    """Raise ValueError (naming the field) unless loading this preset's weights can start: nothing to load
    (`random_init`), a local dir holding them, a hub id whose weights are in the Hugging Face cache, or a
    hub that answers (they are downloaded then). Reads no weights: a missing checkpoint fails in a second,
    not after minutes of retries."""
    if cfg.random_init:
        return
    path = resolve_pretrained(cfg.pretrained)
    names = SAFETENSORS_FILES if cfg.use_safetensors else SAFETENSORS_FILES + PICKLED_FILES
    pickled_only = "; it holds pickled weights only: set model.use_safetensors=false if you trust it"
    if Path(path).is_dir():
        if not any((Path(path) / n).is_file() for n in names):
            has_pickled = any((Path(path) / n).is_file() for n in PICKLED_FILES)
            raise ValueError(f"pretrained: the directory {path} holds no {' or '.join(names)}"
                             + (pickled_only if has_pickled else ""))
        return
    check_local_dir(path)
    from huggingface_hub import constants, get_hf_file_metadata, hf_hub_url, try_to_load_from_cache

    if any(isinstance(try_to_load_from_cache(path, n), str) for n in names):
        return
    if constants.is_offline_mode():
        reason = "HF_HUB_OFFLINE is set"
    else:
        try:
            get_hf_file_metadata(hf_hub_url(path, "config.json"), timeout=10)
            return  # reachable: from_pretrained downloads it
        except Exception as exc:  # noqa: BLE001  (no network, unknown or gated repo: said in the message)
            reason = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
    raise ValueError(f"pretrained: {path}'s weights are not in the Hugging Face cache ({constants.HF_HUB_CACHE}) and "
                     f"cannot be fetched from the hub ({reason}); download them with `hf download {path}` where the hub "
                     "is reachable (the cache follows HF_HOME / HF_HUB_CACHE), or set model.pretrained=<dir> to a "
                     "local copy of the checkpoint (or model.random_init=true for random weights)")


def checkpoint_file(path: str, filename: str, local_only: bool) -> str | None:
    """A file of a checkpoint (local dir or hub id, from the cache when `local_only`), or None."""
    if not path:
        return None
    if Path(path).is_dir():
        f = Path(path) / filename
        return str(f) if f.is_file() else None
    from transformers.utils import cached_file

    try:
        return cached_file(path, filename, local_files_only=local_only, _raise_exceptions_for_missing_entries=False,
                           _raise_exceptions_for_connection_errors=False)
    except Exception:  # noqa: BLE001  (offline, gated, malformed id: no file)
        return None


class Adapter:
    """Base of the model adapters. Subclasses set `config_class` (their dataclass), `hf_model_class` and
    `hf_config_class` (names in `transformers`), and `chat_fallback`: the chat format used when the
    checkpoint has no chat template, a format string with `{content}` (the user's turn)."""

    config_class: type = AdapterConfig
    hf_model_class: str = ""
    hf_config_class: str = ""
    chat_fallback: str = "<|im_start|>user\n{content}<|im_end|>\n<|im_start|>assistant\n"
    extra_text_tokens: int = 0  # non-visual tokens the adapter adds around the video (not from the prompt)
    modalities: tuple[str, ...] = ("video",)  # the visual inputs `prepare` takes; the first is the model's own

    def __init__(self, model, tokenizer, cfg):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.cfg = cfg
        self.device = torch.device(cfg.device)
        self.dtype = DTYPES[cfg.dtype]
        self.model.to(self.device, self.dtype)
        self._chat_template = None  # looked up on first use
        self.compile_mode = "none"  # how the decoder layers run (`compile_layers`)

    # --- building -------------------------------------------------------------------------------
    @classmethod
    def hf_config(cls, cfg):
        """The Hugging Face config of a preset without loading weights: its `architecture` if given, else
        the config.json of `pretrained`."""
        import transformers

        if cfg.architecture:
            return getattr(transformers, cls.hf_config_class)(**cfg.architecture)
        return transformers.AutoConfig.from_pretrained(resolve_pretrained(cfg.pretrained))

    @staticmethod
    def llm_layers(hf_config) -> int:
        """The LLM's decoder layers, from the Hugging Face config (`hf_config`), without weights."""
        return hf_config.text_config.num_hidden_layers

    @classmethod
    def video_text_tokens(cls, hf_config, cfg, groups: int) -> int:
        """Text tokens the adapter writes inside a video of `groups` frame groups, beyond the prompt's (none;
        Qwen3-VL: timestamps and markers), counted by `aim.flops` without a tokenizer."""
        return 0

    @staticmethod
    def prunable_from(hf_config) -> tuple[int, str]:
        """The first decoder layer a pruning schedule may remove visual tokens at, and why not before it."""
        return 1, "a pruning step's importance comes from the layer before it"

    @classmethod
    def from_config(cls, **kwargs):
        import transformers

        cfg = cls.config_class(**kwargs)
        model_class = getattr(transformers, cls.hf_model_class)
        path = resolve_pretrained(cfg.pretrained)
        if cfg.random_init:
            # built on the target device in the target dtype: a 7B model's random init then takes
            # seconds on a GPU instead of minutes (and 4x the memory) in float32 on the CPU
            with torch.device(cfg.device):
                model = model_class._from_config(cls.hf_config(cfg), dtype=DTYPES[cfg.dtype],
                                                 attn_implementation=cfg.attn_implementation)
            tokenizer = cls._local_tokenizer(path)
        else:
            model = model_class.from_pretrained(path, dtype=DTYPES[cfg.dtype], attn_implementation=cfg.attn_implementation,
                                                use_safetensors=cfg.use_safetensors)
            if cfg.architecture:
                cls._check_architecture(cls.hf_config(cfg), model.config, cfg.pretrained)
            tokenizer = transformers.AutoTokenizer.from_pretrained(path)
        adapter = cls(model, tokenizer, cfg)
        adapter.compile_layers(cfg.compile)
        return adapter

    @classmethod
    def for_prompts(cls, **kwargs):
        """The adapter without weights: the model's config (no tensors) and its tokenizer, enough to lay out
        and count a prompt (`prompt_ids`) before anything heavy loads (budget mode measures the dataset's
        prompts with it). Its LLM and vision calls do not work."""
        import transformers

        cfg = cls.config_class(**kwargs)
        path = resolve_pretrained(cfg.pretrained)
        shell = torch.nn.Module()
        shell.config = cls.hf_config(cfg)
        tokenizer = cls._local_tokenizer(path) if cfg.random_init else transformers.AutoTokenizer.from_pretrained(path)
        return cls(shell, tokenizer, cfg)

    @staticmethod
    def _local_tokenizer(path: str):
        """With random weights, a tokenizer only if one is at hand (a local dir or the hub cache): random
        weights must not need a download, and benchmarks of the prefill need no tokenizer."""
        from transformers import AutoTokenizer

        if not path:
            return None
        try:
            return AutoTokenizer.from_pretrained(path, local_files_only=True)
        except (OSError, ValueError):
            return None

    @staticmethod
    def _check_architecture(stored, loaded, pretrained: str) -> None:
        """The preset's stored architecture is what aim.flops counts: say so when the checkpoint differs."""
        fields = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads")
        diffs = [f"text_config.{f}: preset {getattr(stored.text_config, f, None)}, checkpoint "
                 f"{getattr(loaded.text_config, f, None)}" for f in fields
                 if getattr(stored.text_config, f, None) != getattr(loaded.text_config, f, None)]
        if diffs:
            warnings.warn(f"model.architecture differs from {pretrained}'s config ({'; '.join(diffs)}): "
                          "aim.flops counts the preset's architecture", stacklevel=3)

    def compile_layers(self, mode: str, backend: str = "inductor") -> list:
        """Run the decoder layers' bodies compiled or as CUDA graphs (`model.compile`, aim.models.compiled);
        the pruning hooks stay eager. Returns the wrappers (none for mode "none"); a mode other than the current
        one replaces it."""
        from aim.models.compiled import check_compile, compile_decoder_layers, restore_decoder_layers

        check_compile(mode, str(self.device))
        if self.compile_mode != "none":
            restore_decoder_layers(self.decoder_layers)
        self.compile_mode = mode
        return compile_decoder_layers(self.decoder_layers, mode, backend)

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

    # --- text ------------------------------------------------------------------------------------
    def check_modality(self, modality: str) -> None:
        if modality not in self.modalities:
            raise ValueError(f"{type(self).__name__} takes {' or '.join(self.modalities)} inputs, not {modality!r}")

    def visual_token(self, modality: str = "video") -> str:
        """The string of the model's placeholder token for a video or an image (what its chat template writes)."""
        config = self.model.config
        return self.tokenizer.convert_ids_to_tokens(config.image_token_id if modality == "image" else config.video_token_id)

    def inline_visual(self, modality: str = "video") -> str:
        """What stands for the visual input in a text-only chat template's string content."""
        return self.visual_token(modality)

    def user_turn(self, question: str, options: list[str], scoring: str = "letter", task: TaskPrompt | None = None) -> str:
        """The prompt template (with its visual placeholder) around the task's text: the question and its
        options laid out by the dataset's `task` (None: lmms-eval's generic multiple-choice layout), as lmms-eval
        gives that task to this model (`TaskPrompt.for_model`, by the adapter's name). Likelihood scoring uses
        `likelihood_template` and the text without the options: each option's text is a candidate continuation."""
        text = (task or GENERIC_MC).text(question, options, scoring, model=self.cfg.name)
        template = self.cfg.likelihood_template if scoring == "likelihood" else self.cfg.prompt_template
        return template.replace(PROMPT, text)

    @staticmethod
    def split_at_placeholder(turn: str) -> tuple[str, str]:
        placeholder = next(p for p in PLACEHOLDERS if p in turn)
        before, after = turn.split(placeholder)
        return before, after

    def prompt_string(self, question: str, options: list[str], scoring: str = "letter", modality: str = "video",
                      task: TaskPrompt | None = None) -> str:
        """The whole prompt as text, with the model's video or image token once where the visual input goes:
        the filled template (chat_template false), or the user's turn in the checkpoint's chat format."""
        turn = self.user_turn(question, options, scoring, task)
        if not self.cfg.chat_template:
            before, after = self.split_at_placeholder(turn)
            return before + self.visual_token(modality) + after
        return self.render_chat(turn, modality)

    def prompt_text(self, question: str, options: list[str], scoring: str = "letter", modality: str = "video",
                    task: TaskPrompt | None = None) -> tuple[str, str]:
        """The prompt split at the visual input: (text before it, text after it); a plain template's two
        sides are stripped (they are tokenized apart)."""
        before, after = self.prompt_string(question, options, scoring, modality, task).split(self.visual_token(modality))
        if not self.cfg.chat_template:
            return before.strip(), after.strip()
        return before, after

    def prompt_ids(self, question: str, options: list[str], scoring: str = "letter", modality: str = "video",
                   task: TaskPrompt | None = None) -> tuple[list[int], list[int]]:
        """Token ids of the prompt before and after the visual input."""
        before, after = self.prompt_text(question, options, scoring, modality, task)
        return self.token_ids(before), self.token_ids(after)

    def chat_template_source(self) -> tuple[str | None, str]:
        """(jinja template or None, where it came from). The processor's template of the checkpoint first
        (the multimodal one: chat_template.jinja, or chat_template.json), then the tokenizer's own;
        None means the adapter's built-in `chat_fallback`."""
        if self._chat_template is None:
            path = resolve_pretrained(self.cfg.pretrained)
            found = (None, "built-in")
            for name in ("chat_template.jinja", "chat_template.json"):
                f = checkpoint_file(path, name, local_only=self.cfg.random_init)
                if f:
                    text = Path(f).read_text()
                    found = (json.loads(text)["chat_template"] if name.endswith(".json") else text, name)
                    break
            else:
                if getattr(self.tokenizer, "chat_template", None):
                    found = (self.tokenizer.chat_template, "tokenizer")
            self._chat_template = found
        return self._chat_template

    def render_chat(self, turn: str, modality: str = "video") -> str:
        """One user turn (with its visual placeholder) as the model's chat prompt, ending where the
        assistant's answer starts. Multimodal templates take the content as a list of parts ({"type":
        "video"} or {"type": "image"}, {"type": "text"}); text-only ones (Qwen2's) as a string with the
        visual token inline. The rendering must hold the model's video or image token exactly once; the
        prompt is split there. `system_prompt`, when set, is a system turn before the user's (in the same
        content form); the built-in format has its own."""
        template, _ = self.chat_template_source()
        token = self.visual_token(modality)
        before, after = self.split_at_placeholder(turn)
        inline = before + self.inline_visual(modality) + after
        if template is None:
            rendered = self.chat_fallback.format(content=inline)
        else:
            # the template's own separators stand between the parts: only the white space next to the visual
            # placeholder goes (the task's text keeps its own ending, e.g. MVBench's final newline)
            parts = [{"type": "text", "text": before.rstrip()}] if before.strip() else []
            parts.append({"type": modality})
            if after.strip():
                parts.append({"type": "text", "text": after.lstrip()})
            rendered = None
            for content in (parts, inline):
                system = self.cfg.system_prompt
                turns = [] if system is None else [
                    {"role": "system", "content": [{"type": "text", "text": system}] if content is parts else system}]
                out = self.tokenizer.apply_chat_template(turns + [{"role": "user", "content": content}],
                                                         chat_template=template, add_generation_prompt=True,
                                                         tokenize=False)
                if out.count(token) == 1:
                    rendered = out
                    break
        if rendered is None or rendered.count(token) != 1:
            raise ValueError(f"the chat template does not place the {modality} token {token!r} once")
        return rendered

    def token_ids(self, text: str) -> list[int]:
        if self.tokenizer is None:
            raise ValueError(f"model.pretrained: {self.cfg.pretrained!r} gave no tokenizer (random weights use one "
                             "only from a local dir or the hub cache); prompts cannot be tokenized")
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

    def with_prompt(self, merger, after_ids: list[int]):
        """The merger as `prepare` calls it: given `text`, the LLM input embeddings [M, D] of the prompt after the
        visual tokens (question, options, answer cue), when it `needs` "text" (CDPruner's relevance); else as is.
        It keeps the merger's `scope` (a clip reducer stays one)."""
        if "text" not in getattr(merger, "needs", ()):
            return merger
        text = self.embed_tokens(after_ids)
        prompted = lambda features, **signals: merger(features, text=text, **signals)  # noqa: E731
        prompted.scope = getattr(merger, "scope", "frame")
        return prompted

    def reduce(self, merger, after_ids: list[int], features: torch.Tensor, **signals) -> ClipReduced:
        """The merger on the encoded features [groups, T, D] as `prepare` calls it (the prompt's text when it
        needs it, `with_prompt`), its result as a clip's (`reduce_clip`: a per-frame merger's flattened group by
        group, a clip reducer's ragged counts as they come)."""
        return reduce_clip(self.with_prompt(merger, after_ids), features, **signals)

    def assemble(self, before_ids, visual, token_index, after_ids, *layout, **options):
        """A per-frame result laid out: kept tokens `visual` [groups, K, D] at within-group indices `token_index`
        [groups, K] (aim.bench's inputs); `assemble_clip` of the same tokens."""
        return self.assemble_clip(before_ids, clip_of(Merged(visual, token_index)), visual.shape[0], after_ids,
                                  *layout, **options)

    # --- LLM -------------------------------------------------------------------------------------
    def run_llm(self, embeds: torch.Tensor, position_ids: torch.Tensor, cache=None, use_cache: bool = False, **llm_kwargs):
        """One call of the decoder stack. The explicit all-ones attention mask matters: without a mask and
        a cache, transformers 5 reads any jump in 1D position_ids as the start of another packed sequence
        and attends block-diagonally (masking_utils.find_packed_sequence_indices), which would cut the
        text off from the video as soon as merging leaves gaps in the positions. `llm_kwargs`: a prefill's
        further inputs (`PreparedInputs.llm_kwargs`)."""
        past = cache.get_seq_length() if cache is not None else 0
        mask = torch.ones((embeds.shape[0], past + embeds.shape[1]), dtype=torch.long, device=self.device)
        self._step_begin()
        return self.language_model(
            inputs_embeds=embeds, position_ids=position_ids, attention_mask=mask, cache=cache, use_cache=use_cache,
            **llm_kwargs,
        )

    @torch.no_grad()
    def prefill_logits(self, inputs) -> torch.Tensor:
        """LLM prefill (no cache kept) and the next-token logits at the last position: [vocab]."""
        out = self.run_llm(inputs.inputs_embeds, inputs.position_ids, **inputs.llm_kwargs)
        return self.model.lm_head(out.last_hidden_state[0, -1]).float()

    @torch.no_grad()
    def prefill_logits_batch(self, embeds: torch.Tensor, position_ids: torch.Tensor,
                             attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """One LLM prefill of several samples (no cache kept), the next-token logits at each row's last
        position: [B, vocab]. `embeds` [B, N, D], `position_ids` [B, N] (or [axes, B, N]); `attention_mask`
        [B, N], 0 at the pads of a left-padded batch (None: no pads). Only for inputs without further LLM
        inputs (`PreparedInputs.llm_kwargs` empty): those go through `prefill_logits` one at a time."""
        if attention_mask is None:
            attention_mask = torch.ones(embeds.shape[:2], dtype=torch.long, device=self.device)
        self._step_begin()
        out = self.language_model(inputs_embeds=embeds, position_ids=position_ids, attention_mask=attention_mask,
                                  use_cache=False)
        return self.model.lm_head(out.last_hidden_state[:, -1]).float()

    def _step_begin(self) -> None:
        """Under model.compile=reduce-overhead, each LLM call is a new step of inductor's CUDA-graph trees: the
        graphs' outputs of the call before (consumed by then) may be overwritten."""
        if getattr(self, "compile_mode", "none") == "reduce-overhead":
            torch.compiler.cudagraph_mark_step_begin()

    def synchronize(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def eos_token_ids(self) -> set[int]:
        ids = {self.tokenizer.eos_token_id} if self.tokenizer is not None else set()
        gen = getattr(self.model, "generation_config", None)
        eos = getattr(gen, "eos_token_id", None)
        ids |= set(eos) if isinstance(eos, (list, tuple)) else {eos}
        return {i for i in ids if i is not None}

    @torch.no_grad()
    def generate_ids(self, inputs, max_new_tokens: int, stats: dict | None = None, stop_at_eos: bool = True) -> list[int]:
        """Greedy decoding with the KV cache. Positions continue one past the last prompt position (on every
        axis of a multi-axis RoPE: the last prompt token is text), so they stay right when merging left
        gaps in the visual positions. `stats`, when given, receives what the decoding cost: `ttft_ms`
        (the prefill to the first token, host clock; reading the token id waits for the device),
        `kv_cache_bytes` (the KV cache the prefill leaves, every layer's keys and values: a pruned layer
        holds fewer tokens), `decode_tokens` (the tokens after the first) and `decode_tokens_per_s` (those
        over their time; None when there are none). `stop_at_eos=False` decodes `max_new_tokens` always."""
        start = time.perf_counter()
        out = self.run_llm(inputs.inputs_embeds, inputs.position_ids, use_cache=True, **inputs.llm_kwargs)
        cache, position = out.cache, inputs.position_ids[..., -1:]
        next_id = int(self.model.lm_head(out.last_hidden_state[0, -1]).argmax())
        decode_start = time.perf_counter()
        if stats is not None:
            stats.update(ttft_ms=(decode_start - start) * 1e3, kv_cache_bytes=kv_cache_bytes(cache))
        ids, eos = [next_id], self.eos_token_ids() if stop_at_eos else set()
        while len(ids) < max_new_tokens and next_id not in eos:
            position = position + 1
            out = self.run_llm(self.embed_tokens([next_id])[None], position, cache, True)
            cache = out.cache
            next_id = int(self.model.lm_head(out.last_hidden_state[0, -1]).argmax())
            ids.append(next_id)
        if stats is not None:
            decoded = len(ids) - 1
            stats.update(decode_tokens=decoded,
                         decode_tokens_per_s=decoded / (time.perf_counter() - decode_start) if decoded else None)
        return ids

    def generate_text(self, inputs, max_new_tokens: int, stats: dict | None = None) -> str:
        return self.tokenizer.decode(self.generate_ids(inputs, max_new_tokens, stats), skip_special_tokens=True)


def kv_cache_bytes(cache) -> int:
    """Bytes of a Hugging Face KV cache: every layer's key and value tensors (a layer the pruning hook
    shortened holds only its kept tokens)."""
    total = 0
    for layer in getattr(cache, "layers", []):
        for t in (getattr(layer, "keys", None), getattr(layer, "values", None)):
            if isinstance(t, torch.Tensor):
                total += t.numel() * t.element_size()
    return total
