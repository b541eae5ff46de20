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
import re
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
# accelerate's ways of spreading a model over the visible GPUs (transformers' `from_pretrained(device_map=...)`)
DEVICE_MAP_STRATEGIES = ("auto", "balanced", "balanced_low_0", "sequential")
SIZE = re.compile(r"^\s*\d+(\.\d+)?\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)\s*$", re.IGNORECASE)
# Where the visual input goes in `prompt_template` / `likelihood_template`: either spelling, once. The
# sample's modality (not the spelling) decides which of the model's tokens it becomes.
VIDEO = "<video>"
IMAGE = "<image>"
PLACEHOLDERS = (VIDEO, IMAGE)
PROMPT = "{prompt}"  # where the task's text (the dataset's `aim.prompts.TaskPrompt`) goes in a prompt template
# How `chat_template: true` wraps the user's turn: `lmms_eval`, the conversation lmms-eval's model class for the
# family builds (the original code's template: LLaVA-NeXT's, LLaVA's, InternVL's; the processor's for Qwen), or
# `hf`, the checkpoint's own (Hugging Face processor's) chat template.
CHAT_WRAPS = ("lmms_eval", "hf")


@dataclass(frozen=True)
class Conversation:
    """A conversation template as a string layout: what the original model code (the one lmms-eval runs for a
    family) writes around one user turn, ending where the assistant's answer starts.

    `system_turn` holds `{system}` (the system text: `model.system_prompt`, else `system`), `user_turn` holds
    `{content}`: the user's turn with the visual input written in place (`Adapter.inline_visual`). With
    `omit_empty_system` an empty system text drops the system turn (LLaVA-NeXT's ChatML style does). With
    `adjacent`, the visual input and the text are parts of one content list whose template puts nothing between
    them (Qwen's processors), so the white space the prompt template puts next to the visual placeholder goes."""

    system: str
    system_turn: str
    user_turn: str
    omit_empty_system: bool = False
    adjacent: bool = False

    def render(self, before: str, visual: str, after: str, system: str | None = None) -> str:
        system = self.system if system is None else system
        if self.adjacent:
            before, after = before.rstrip(), after.lstrip()
        opening = "" if self.omit_empty_system and not system else self.system_turn.format(system=system)
        return opening + self.user_turn.format(content=before + visual + after)


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
    # lmms_eval: the conversation lmms-eval's model class builds for the family (LLaVA-NeXT's qwen_1_5 for
    # LLaVA-OneVision / LLaVA-Video, LLaVA's vicuna_v1 for LLaVA-1.5, InternVL's internvl2_5 with its system
    # message, the Qwen processors' with "You are a helpful assistant."); hf: the checkpoint's own chat template
    # (the Hugging Face processor's). Only read with chat_template true; the real presets set lmms_eval.
    chat_wrap: str = "hf"
    # a system turn before the user's (None: the wrap's own default: the conversation's system text for
    # lmms_eval, the chat template's default, if any, for hf): lmms-eval's Qwen2-VL / Qwen2.5-VL / Qwen3-VL
    # model classes send "You are a helpful assistant."
    system_prompt: str | None = None
    # Where the visual input (<video> or <image>) and the task's text ({prompt}: the question, options and
    # instructions as the dataset lays them out, `aim.prompts.TaskPrompt`) go in the user's turn; lmms-eval
    # puts the visual first, then a newline.
    prompt_template: str = "<video>\n{prompt}"
    # eval.mode=likelihood: the prompt whose next token is scored against each option's text (the task's text
    # without the options)
    likelihood_template: str = "<video>\n{prompt}"
    # Model parallel (accelerate's big-model loading, as transformers' `from_pretrained(device_map=...)` does it):
    # null keeps the whole model on `device`; auto | balanced | balanced_low_0 | sequential spread its modules
    # (whole decoder layers) over the job's GPUs; or an explicit {module name: device} map, a device being a
    # GPU index, "cuda:N" or "cpu" ("" names the whole model). Accelerate's hooks move each module's inputs to
    # its device; the adapter's inputs start on the input embeddings' device.
    device_map: Any = None
    # with a device_map strategy: the most each device may hold, {GPU index or "cpu": size}, e.g. {0: 70GiB,
    # 1: 78GiB} (null: what each GPU has free)
    max_memory: Any = None
    gpus: int = 1  # GPUs one job of this model needs (the SLURM launcher's gpus_per_node); > 1 needs a device_map
    # Which frames of a video the model sees (aim.data.video.FRAME_SAMPLING, checked by aim.config):
    # segment_middle (aim's: the middle of each of num_frames equal segments), linspace (lmms-eval's
    # LLaVA-OneVision: np.linspace(0, n - 1, num_frames) truncated, first and last frame included), internvl
    # (lmms-eval's InternVL3: `get_index`), qwen_fps (lmms-eval's Qwen2-VL / Qwen2.5-VL: qwen-vl-utils' 2 frames
    # a second, then num_frames of those), rounded_linspace (lmms-eval's Qwen3-VL). The real presets set their
    # lmms-eval model class's rule.
    frame_sampling: str = "segment_middle"
    # the decoder layers' bodies compiled or graph-captured, static shapes per input layout (aim.models.compiled):
    # none | default (torch.compile, CPU or GPU) | reduce-overhead (torch.compile's CUDA graphs) | cuda_graphs
    # (hand-captured CUDA graphs); the last two need device=cuda. Cache-free prefills only (decoding stays eager).
    compile: str = "none"

    def __post_init__(self):
        from aim.checks import check_choice, check_range
        from aim.models.compiled import check_compile

        check_choice("dtype", self.dtype, DTYPES)
        try:
            torch.device(self.device)
        except (RuntimeError, TypeError):
            raise ValueError(f"device: {self.device!r} is not a torch device; e.g. cpu, cuda, cuda:1, mps") from None
        check_range("gpus", self.gpus, 1)
        if isinstance(self.max_memory, dict):  # "0" from a command line's {0:70GiB} is GPU 0, as in a YAML file
            self.max_memory = {int(k) if isinstance(k, str) and k.isdigit() else k: v for k, v in self.max_memory.items()}
        check_device_map(self.device_map, self.max_memory, self.gpus, self.device)
        check_choice("attn_implementation", self.attn_implementation, ATTENTION)
        check_choice("chat_wrap", self.chat_wrap, CHAT_WRAPS)
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


def map_gpus(device_map) -> set[int]:
    """The GPU indices an explicit device map places modules on."""
    out = set()
    for dev in device_map.values():
        if isinstance(dev, int) and not isinstance(dev, bool):
            out.add(dev)
        elif isinstance(dev, str) and dev.startswith("cuda"):
            out.add(int(dev.partition(":")[2] or 0))
    return out


def check_device_map(device_map, max_memory, gpus: int, device: str) -> None:
    """ValueError naming the field unless `device_map` / `max_memory` / `gpus` are a loading transformers and
    accelerate accept and the job's GPU count covers: a strategy (DEVICE_MAP_STRATEGIES) on `device` cuda, or a
    {module: device} map (a GPU index < gpus, "cuda:N" or "cpu"; no disk offload); `max_memory` only with a
    strategy, {GPU index < gpus or "cpu": size such as "70GiB", or bytes}; `gpus` > 1 only with a device_map."""
    if device_map is None:
        if max_memory is not None:
            raise ValueError("max_memory: only with a device_map strategy (model.device_map=auto, balanced, "
                             "balanced_low_0 or sequential); it is null")
        if gpus > 1:
            raise ValueError(f"gpus: {gpus} GPUs asked, but device_map is null: the model runs on one device; set "
                             f"model.device_map to one of {', '.join(DEVICE_MAP_STRATEGIES)} or a map, or gpus=1")
        return
    if isinstance(device_map, str):
        if device_map not in DEVICE_MAP_STRATEGIES:
            raise ValueError(f"device_map: {device_map!r} is not allowed; choose one of: null, "
                             f"{', '.join(DEVICE_MAP_STRATEGIES)}, or a {{module: device}} map")
        if not str(device).startswith("cuda"):
            raise ValueError(f"device_map: {device_map} spreads the model over GPUs and needs model.device=cuda, got "
                             f"{device!r}; on a CPU use device_map=null (or an explicit map of \"cpu\")")
    elif isinstance(device_map, dict):
        if not device_map:
            raise ValueError("device_map: an explicit map needs at least one {module: device} entry")
        for module, dev in device_map.items():
            ok = (isinstance(dev, int) and not isinstance(dev, bool) and dev >= 0) or dev == "cpu" or (
                isinstance(dev, str) and re.fullmatch(r"cuda(:\d+)?", dev) is not None)
            if not isinstance(module, str) or not ok:
                raise ValueError(f"device_map: {module!r}: {dev!r} is not allowed; a module name maps to a GPU index, "
                                 "\"cuda:N\" or \"cpu\" (disk offload is not supported)")
        used = map_gpus(device_map)
        if used and max(used) >= gpus:
            raise ValueError(f"gpus: the device_map places modules on GPU {max(used)}, and a job of model.gpus={gpus} "
                             f"sees GPUs 0..{gpus - 1}; set model.gpus={max(used) + 1}")
        if max_memory is not None:
            raise ValueError("max_memory: only with a device_map strategy; an explicit map places every module itself")
    else:
        raise ValueError(f"device_map: {device_map!r} is not allowed; choose one of: null, "
                         f"{', '.join(DEVICE_MAP_STRATEGIES)}, or a {{module: device}} map")
    if max_memory is not None:
        if not isinstance(max_memory, dict) or not max_memory:
            raise ValueError(f"max_memory: a {{device: size}} map such as {{0: 70GiB, 1: 78GiB}}, got {max_memory!r}")
        for dev, size in max_memory.items():
            gpu = isinstance(dev, int) and not isinstance(dev, bool)
            if not (gpu and 0 <= dev < gpus) and dev != "cpu":
                raise ValueError(f"max_memory: device {dev!r} is not allowed; a GPU index in 0..{gpus - 1} (model.gpus="
                                 f"{gpus}) or \"cpu\"")
            if not ((isinstance(size, int) and not isinstance(size, bool) and size >= 0)
                    or (isinstance(size, str) and SIZE.match(size))):
                raise ValueError(f"max_memory: {dev!r}: {size!r} is no size; give bytes or a string such as 70GiB or 75GB")


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


def check_visible_gpus(cfg) -> None:
    """Before loading with a device_map: the GPUs it needs are visible to this process (ValueError naming
    model.gpus / model.device_map otherwise), so a job that got too few GPUs says so instead of loading for
    minutes and then running out of memory or off the map."""
    gpus = map_gpus(cfg.device_map) if isinstance(cfg.device_map, dict) else (
        set(range(cfg.gpus)) if isinstance(cfg.device_map, str) else set())
    if not gpus:
        return
    seen = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if max(gpus) >= seen:
        raise ValueError(f"gpus: model.device_map={cfg.device_map} needs {max(gpus) + 1} GPUs (model.gpus={cfg.gpus}) and "
                         f"this process sees {seen}; ask the launcher for them (hydra/launcher=slurm takes "
                         "gpus_per_node from model.gpus) or set CUDA_VISIBLE_DEVICES")


def job_max_memory(cfg):
    """The `max_memory` a strategy gets: the configured one, else, where more GPUs are visible than `model.gpus`
    (an interactive node), the free memory of GPUs 0..gpus-1 only, so the model spreads over the GPUs the job
    asked for and no others (accelerate's default would take every visible GPU)."""
    if cfg.max_memory is not None or not isinstance(cfg.device_map, str):
        return cfg.max_memory
    if not torch.cuda.is_available() or torch.cuda.device_count() <= cfg.gpus:
        return None
    return {i: torch.cuda.mem_get_info(i)[0] for i in range(cfg.gpus)}


def check_placement(device_map, cfg) -> None:
    """After a strategy placed the model: ValueError if it offloaded modules to the CPU or disk (the model did not
    fit the GPUs' memory, and would run many times slower), unless `max_memory` gives the CPU a budget on
    purpose. An explicit map is the user's own placement."""
    if not isinstance(cfg.device_map, str) or not device_map:
        return
    offloaded = sorted({str(d) for d in device_map.values() if d in ("cpu", "disk")})
    if offloaded and not (cfg.max_memory and "cpu" in cfg.max_memory):
        names = [m for m, d in device_map.items() if d in ("cpu", "disk")]
        raise ValueError(f"device_map: {cfg.device_map} offloaded {len(names)} modules ({', '.join(names[:3])}"
                         f"{', ...' if len(names) > 3 else ''}) to {' and '.join(offloaded)}: the model does not fit the "
                         f"memory of model.gpus={cfg.gpus} GPUs (python -m aim.flops model=... prints what it needs); raise "
                         "model.gpus, or give model.max_memory a cpu budget to offload on purpose")


def random_dispatched(model_class, hf_config, cfg):
    """Random weights spread by `cfg.device_map` as `from_pretrained(device_map=...)` spreads a checkpoint: the
    model built on the meta device (no memory), its device map computed by transformers (a strategy: from the
    module sizes, `max_memory` and the model's no-split modules; an explicit map as given), each mapped module
    allocated on its device and initialized by the model's own `initialize_weights` (the same init as a
    random build on one device, not the same draws), tied weights tied again, then dispatched by accelerate
    (its hooks move each module's inputs to its device). No whole copy of the model exists anywhere."""
    from accelerate.utils import set_module_tensor_to_device
    from transformers.integrations.accelerate import _get_device_map, accelerate_dispatch

    with torch.device("meta"):
        model = model_class._from_config(hf_config, dtype=DTYPES[cfg.dtype], attn_implementation=cfg.attn_implementation)
    device_map = _get_device_map(model, cfg.device_map, job_max_memory(cfg), None)
    tensors = [*model.named_parameters(remove_duplicate=False), *model.named_buffers(remove_duplicate=False)]
    for name, tensor in tensors:  # each on the device of the longest map entry naming it or a module above it
        owner = max((k for k in device_map if k == "" or name == k or name.startswith(k + ".")), key=len)
        set_module_tensor_to_device(model, name, device_map[owner], value=torch.empty_like(tensor, device="cpu"))
    model.initialize_weights()
    model.tie_weights()
    accelerate_dispatch(model, None, device_map, None, None, False)
    model.hf_device_map = device_map
    check_placement(device_map, cfg)
    return model


class Adapter:
    """Base of the model adapters. Subclasses set `config_class` (their dataclass), `hf_model_class` and
    `hf_config_class` (names in `transformers`), and `chat_fallback`: the chat format used when the
    checkpoint has no chat template, a format string with `{content}` (the user's turn), and
    `lmms_eval_conversation`: the `Conversation` lmms-eval's model class for the family writes (`chat_wrap:
    lmms_eval`)."""

    config_class: type = AdapterConfig
    hf_model_class: str = ""
    hf_config_class: str = ""
    chat_fallback: str = "<|im_start|>user\n{content}<|im_end|>\n<|im_start|>assistant\n"
    extra_text_tokens: int = 0  # non-visual tokens the adapter adds around the video (not from the prompt)
    modalities: tuple[str, ...] = ("video",)  # the visual inputs `prepare` takes; the first is the model's own
    lmms_eval_conversation: Conversation | None = None
    # whether samples may share one LLM prefill (`prefill_logits_batch`, aim.eval.loop's eval.batch_size); False
    # where each prefill carries further LLM inputs of its own (`PreparedInputs.llm_kwargs`: Qwen3-VL's DeepStack),
    # which a batched prefill does not take: the loop prefills those samples one at a time
    batched_prefill: bool = True

    def __init__(self, model, tokenizer, cfg):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.cfg = cfg
        self.dtype = DTYPES[cfg.dtype]
        if getattr(cfg, "device_map", None) is None or not hasattr(model, "get_input_embeddings"):  # (a prompt shell)
            self.device = torch.device(cfg.device)
            self.model.to(self.device, self.dtype)
            self.cuda_devices = [self.device] if self.device.type == "cuda" else []
        else:  # spread over devices (`device_map`): accelerate's hooks move each module's inputs to its device,
            # and the adapter's inputs (ids, embeddings, positions, masks) start where the input embeddings are
            self.device = self.model.get_input_embeddings().weight.device
            # every GPU it runs on: timings wait for all of them (`synchronize`)
            self.cuda_devices = sorted({t.device for t in self.model.parameters() if t.device.type == "cuda"}, key=str)
        self._chat_template = None  # looked up on first use
        if cfg.chat_template and cfg.chat_wrap == "lmms_eval" and self.lmms_eval_conversation is None:
            raise ValueError(f"chat_wrap: {type(self).__name__} has no lmms-eval conversation; set chat_wrap=hf")
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
        if cfg.device_map is not None:
            check_visible_gpus(cfg)
        if cfg.random_init and cfg.device_map is not None:
            model = random_dispatched(model_class, cls.hf_config(cfg), cfg)
            tokenizer = cls._local_tokenizer(path)
        elif cfg.random_init:
            # built on the target device in the target dtype: a 7B model's random init then takes
            # seconds on a GPU instead of minutes (and 4x the memory) in float32 on the CPU
            with torch.device(cfg.device):
                model = model_class._from_config(cls.hf_config(cfg), dtype=DTYPES[cfg.dtype],
                                                 attn_implementation=cfg.attn_implementation)
            tokenizer = cls._local_tokenizer(path)
        else:
            spread = {} if cfg.device_map is None else {"device_map": cfg.device_map, "max_memory": job_max_memory(cfg)}
            model = model_class.from_pretrained(path, dtype=DTYPES[cfg.dtype], attn_implementation=cfg.attn_implementation,
                                                use_safetensors=cfg.use_safetensors, **spread)
            if cfg.device_map is not None:
                check_placement(getattr(model, "hf_device_map", None), cfg)
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
        the filled template (chat_template false), or the user's turn in a chat format: lmms-eval's
        conversation for the family (`chat_wrap: lmms_eval`) or the checkpoint's chat template (`hf`)."""
        turn = self.user_turn(question, options, scoring, task)
        if not self.cfg.chat_template:
            before, after = self.split_at_placeholder(turn)
            return before + self.visual_token(modality) + after
        if self.cfg.chat_wrap == "lmms_eval":
            return self.render_lmms_eval(turn, modality)
        return self.render_chat(turn, modality)

    def render_lmms_eval(self, turn: str, modality: str = "video") -> str:
        """One user turn (with its visual placeholder) in the conversation lmms-eval's model class for this
        family builds (`lmms_eval_conversation`), the visual input written as `inline_visual`; `system_prompt`,
        when set, replaces the conversation's system text."""
        before, after = self.split_at_placeholder(turn)
        return self.lmms_eval_conversation.render(before, self.inline_visual(modality), after, self.cfg.system_prompt)

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
        features, signals = self.on_input_device(features), self.on_input_device(signals)
        return reduce_clip(self.with_prompt(merger, after_ids), features, **signals)

    def on_input_device(self, encoded):
        """A tensor, or the tensors of a dict (others as they are), on the adapter's input device: with a
        `device_map` the vision tower and projector may sit on another GPU than the input embeddings, and the
        merger's output is spliced between those embeddings."""
        if isinstance(encoded, torch.Tensor):
            return encoded.to(self.device)
        return {k: v.to(self.device) if isinstance(v, torch.Tensor) else v for k, v in encoded.items()}

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
        inputs (`PreparedInputs.llm_kwargs` empty): an adapter whose prefills carry some says
        `batched_prefill = False`, and its samples go through `prefill_logits` one at a time."""
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
        """Wait for the GPU work queued so far: on every GPU the model is spread over (`model.device_map`)."""
        for device in self.cuda_devices:
            torch.cuda.synchronize(device)

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
