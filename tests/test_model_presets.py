"""Model presets (conf/model/*.yaml) hold the published architectures, so FLOPs need no download and
`model.random_init=true` builds them; prompts use the real chat format; unreduced adapters equal the plain
Hugging Face models on the same inputs, with the chat prompt too."""
import json
from dataclasses import asdict, replace

import pytest
import torch
from hydra import compose, initialize_config_dir

from aim.config import ConfigError, validate
from aim.data import synthetic as syn
from aim.merging import NoMerge
from aim.models import MODELS
from aim.models.base import Adapter
from aim.paths import CONF_DIR

QUESTION, OPTIONS = "what colour is the circle ?", ["red", "blue", "green", "yellow"]
MC_TEXT = ("what colour is the circle ?\nA. red\nB. blue\nC. green\nD. yellow\n"
           "Answer with the option's letter from the given choices directly.")
QWEN_SPECIALS = ["<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|video_pad|>"]


def model_cfg(name, overrides=()):
    """A preset's validated model fields (pruner=none: the default toy schedule is refused on a real preset)."""
    pruner = [] if any(o.startswith("pruner=") for o in overrides) else ["pruner=none"]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return validate(compose("config", overrides=[f"model={name}", *pruner, *overrides])).model


def real_prompt():
    """The prompt fields of the real checkpoints' presets (the same in all four)."""
    fields = ("prompt_template", "likelihood_template")
    prompts = {name: tuple(getattr(model_cfg(name), f) for f in fields)
               for name in ("llava_onevision_0.5b", "llava_onevision_7b", "llava_onevision_72b", "qwen2_vl_7b",
                                 "qwen2_5_vl_7b", "qwen2_5_vl_3b", "internvl3_8b")}
    assert len(set(prompts.values())) == 1
    return dict(zip(fields, prompts["llava_onevision_7b"]))


def frames(num=2):
    return syn.render(syn.sample_item(0, 0)[0])[:num]


@pytest.mark.parametrize(
    "preset,hub_id,layers,hidden,heads,kv_heads,grid",
    [
        ("llava_onevision_0.5b", "llava-hf/llava-onevision-qwen2-0.5b-ov-hf", 24, 896, 14, 2, (32, 14, 14)),
        ("llava_onevision_7b", "llava-hf/llava-onevision-qwen2-7b-ov-hf", 28, 3584, 28, 4, (32, 14, 14)),
        ("llava_onevision_72b", "llava-hf/llava-onevision-qwen2-72b-ov-hf", 80, 8192, 64, 8, (32, 14, 14)),
        # LLaVA-Video: OneVision-7B's architecture; the Hugging Face classes pool its frames 2x2 (ceil) too
        ("llava_video_7b", "llava-hf/LLaVA-Video-7B-Qwen2-hf", 28, 3584, 28, 4, (32, 14, 14)),
        # 360x640 video -> 364x644 px (multiples of 28) -> 13x23 tokens per pair of frames
        ("qwen2_vl_7b", "Qwen/Qwen2-VL-7B-Instruct", 28, 3584, 28, 4, (16, 13, 23)),
        ("qwen2_5_vl_7b", "Qwen/Qwen2.5-VL-7B-Instruct", 28, 3584, 28, 4, (16, 13, 23)),
        ("qwen2_5_vl_3b", "Qwen/Qwen2.5-VL-3B-Instruct", 36, 2048, 16, 2, (16, 13, 23)),
        # lmms-eval's tiling at 32 frames of 360x640: 2 x 1 tiles + a thumbnail per frame, each 448 px tile 32x32
        # patches of 14 px, pixel shuffle -> 16x16 tokens; a frame's tiles one under another: 48 x 16
        ("internvl3_8b", "OpenGVLab/InternVL3-8B-hf", 28, 3584, 28, 4, (32, 48, 16)),
        # an image model: 32 images of 24x24 tokens (336 px, patch 14), no pooling
        ("llava_1.5_7b", "llava-hf/llava-1.5-7b-hf", 32, 4096, 32, 32, (32, 24, 24)),
    ],
)
def test_presets_hold_the_published_architectures(preset, hub_id, layers, hidden, heads, kv_heads, grid):
    cfg = model_cfg(preset)
    assert cfg.pretrained == hub_id and not cfg.random_init and cfg.chat_template
    adapter = MODELS.get(cfg.name)
    hf = adapter.hf_config(cfg)  # from the stored architecture: nothing read from `pretrained`
    assert type(hf).__name__ == adapter.hf_config_class
    t = hf.text_config
    assert (t.num_hidden_layers, t.hidden_size, t.num_attention_heads, t.num_key_value_heads) == (layers, hidden, heads, kv_heads)
    assert adapter.feature_grid(hf, cfg, 32) == grid


def test_qwen2_vl_preset_frame_options_change_its_token_grid():
    cfg = model_cfg("qwen2_vl_7b", ["model.frame_size=[448,448]", "model.max_pixels=200704"])
    adapter = MODELS.get("qwen2_vl")
    assert adapter.feature_grid(adapter.hf_config(cfg), cfg, 32) == (16, 16, 16)  # 448 px at most 448x448
    cfg = model_cfg("qwen2_vl_7b", ["model.max_frames=16"])
    assert adapter.feature_grid(adapter.hf_config(cfg), cfg, 32)[0] == 8
    with pytest.raises(ConfigError, match=r"model.max_pixels: must be in \[3136, inf\)"):  # lmms-eval's min_pixels
        model_cfg("qwen2_vl_7b", ["model.max_pixels=1000"])


@pytest.mark.parametrize("preset", ["qwen2_vl_7b", "qwen2_5_vl_7b"])
def test_flops_of_qwen2_vl_7b_from_its_preset(tmp_path, preset):
    from aim.efficiency.cost import flops

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        valid = validate(compose("config", overrides=[f"model={preset}", "dataset.num_frames=32", "merger=aim",
                                                      "merger.ratio=0.25", "pruner=none"]))
    result = flops(valid)
    assert (result["frame_groups"], result["token_grid"], result["tokens_per_frame"]) == (16, [13, 23], 299)
    assert result["visual_tokens_unmerged"] == 16 * 299 and result["visual_tokens"] == 16 * 74
    assert result["tokens_per_layer"] == [16 * 74 + 100] * 28


def test_flops_of_llava_video_7b_from_its_preset_unreduced_and_with_the_papers_reduction():
    """196 visual tokens per frame (the Hugging Face classes' 2x2 bilinear pooling of 27x27 patches), one
    newline after the video: the same token layout, and so the same TFLOPs, as LLaVA-OneVision-7B."""
    from aim.efficiency.cost import flops

    def run(*overrides):
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return flops(validate(compose("config", overrides=["model=llava_video_7b", "dataset.num_frames=32",
                                                               *overrides])))

    full = run("merger=none", "pruner=none")
    assert (full["frame_groups"], full["token_grid"], full["tokens_per_frame"]) == (32, [14, 14], 196)
    assert full["visual_tokens"] == 32 * 196 and full["model"] == "llava-hf/LLaVA-Video-7B-Qwen2-hf"
    assert round(full["tflops"], 2) == 99.63
    reduced = run("merger=aim", "merger.ratio=0.25", "pruner=aim", "pruner.l1=14", "pruner.l2=22")
    assert (reduced["kept_per_frame"], reduced["visual_tokens"]) == (49, 32 * 49)
    assert round(reduced["tflops_full"], 2) == 99.63 and round(reduced["tflops"], 2) == 14.76


def test_flops_of_internvl3_8b_from_its_preset_unreduced_and_with_the_papers_reduction():
    """256 visual tokens per 448 px tile (32x32 patches, pixel shuffle to 16x16) into Qwen2.5-7B, and the
    frames' labels as text beside the prompt's 100 tokens (`Frame{i}: <img>`, `</img>`, newlines: 246 for 32
    frames in Qwen2's tokenizer, which splits the numbers into digits). The -hf processor's one tile per frame
    (`model.tiling=hf`) here; the preset's lmms-eval tiling gives a 360x640 frame 3 tiles at 32 frames."""
    from aim.efficiency.cost import flops

    def run(*overrides):
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return flops(validate(compose("config", overrides=["model=internvl3_8b", "dataset.num_frames=32",
                                                               *overrides])))

    tiled = run("merger=none", "pruner=none")
    assert (tiled["frame_groups"], tiled["token_grid"], tiled["tokens_per_frame"]) == (32, [48, 16], 768)
    assert tiled["tokens_per_layer"] == [32 * 768 + 100 + 246] * 28
    full = run("merger=none", "pruner=none", "model.tiling=hf")
    assert (full["frame_groups"], full["token_grid"], full["tokens_per_frame"]) == (32, [16, 16], 256)
    assert full["tokens_per_layer"] == [32 * 256 + 100 + 246] * 28
    reduced = run("merger=aim", "merger.ratio=0.25", "pruner=aim", "pruner.l1=14", "pruner.l2=22", "model.tiling=hf")
    assert (reduced["kept_per_frame"], reduced["visual_tokens"]) == (64, 32 * 64)
    assert round(reduced["tflops_full"], 2) == round(full["tflops"], 2) == 140.99
    assert round(reduced["tflops"], 2) == 22.61


def test_llava_onevision_video_tokens_per_frame_are_the_hugging_face_models_own():
    """The adapter's video features (tower, projector, 2x2 pooling) equal `get_video_features` of the Hugging
    Face class that LLaVA-OneVision and LLaVA-Video checkpoints both run, frame by frame, less the one
    newline the model appends after the video: tiny preset, fp32, at 120 px for an odd patch grid as the
    real towers' 27x27 (15x15 patches -> 8x8 tokens: bilinear to the ceiling, not 2x2 average pooling's 7x7)."""
    cfg = model_cfg("llava_onevision_tiny", ["model.architecture.vision_config.image_size=120"])
    torch.manual_seed(0)
    adapter = MODELS.get(cfg.name).from_config(**asdict(cfg))
    clip = frames(3)
    pixels = adapter.pixel_values(clip)
    ours = adapter.visual_features(pixels)
    hf = adapter.model.model.get_video_features(
        pixels[None], vision_feature_layer=adapter.model.config.vision_feature_layer,
        vision_feature_select_strategy=adapter.model.config.vision_feature_select_strategy).pooler_output[0]
    _, rows, cols = adapter.grid(len(clip))
    assert ours.shape[:2] == (3, rows * cols) == (3, 8 * 8)
    assert hf.shape[0] == 3 * rows * cols + 1
    torch.testing.assert_close(ours.reshape(-1, ours.shape[-1]), hf[:-1])
    torch.testing.assert_close(hf[-1], adapter.model.model.image_newline)


@pytest.mark.parametrize("preset,model_class", [("llava_onevision_tiny", "LlavaOnevisionForConditionalGeneration"),
                                                ("qwen2_vl_tiny", "Qwen2VLForConditionalGeneration"),
                                                ("qwen2_5_vl_tiny", "Qwen2_5_VLForConditionalGeneration"),
                                                ("internvl3_tiny", "InternVLForConditionalGeneration"),
                                                ("llava_1.5_tiny", "LlavaForConditionalGeneration")])
def test_random_init_builds_a_preset_from_its_architecture(preset, model_class):
    cfg = model_cfg(preset)
    assert cfg.random_init
    adapter = MODELS.get(cfg.name).from_config(**asdict(cfg))
    assert type(adapter.model).__name__ == model_class
    assert adapter.num_layers == 4 and adapter.tokenizer is not None  # the tokenizer: the bundled toy model's
    assert adapter.text_config.vocab_size == len(adapter.tokenizer)


def test_random_weights_never_reach_for_the_hub_for_a_tokenizer():
    assert Adapter._local_tokenizer("llava-hf/llava-onevision-qwen2-0.5b-ov-hf-not-cached") is None


# --- prompts ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def llava_chat():
    cfg = replace(model_cfg("llava_onevision_tiny"), chat_template=True, **real_prompt())
    torch.manual_seed(0)
    return MODELS.get("llava_onevision").from_config(**asdict(cfg))


def test_llava_onevision_without_a_chat_template_uses_its_qwen2_conversation(llava_chat):
    assert llava_chat.chat_template_source() == (None, "built-in")
    before, after = llava_chat.prompt_text(QUESTION, OPTIONS)
    assert before == "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
    assert after == "\n" + MC_TEXT + "<|im_end|>\n<|im_start|>assistant\n"
    _, after = llava_chat.prompt_text(QUESTION, OPTIONS, scoring="likelihood")
    assert after == "\nwhat colour is the circle ?<|im_end|>\n<|im_start|>assistant\n"


# A multimodal template in the llava-hf style (content parts; the video before the text), written for this test.
MULTIMODAL = ("{% for m in messages %}<|im_start|>{{ m['role'] }} {% for c in m['content'] %}{% if c['type'] == 'video' %}"
              "<video>{% endif %}{% endfor %}{% for c in m['content'] %}{% if c['type'] == 'text' %}{{ '\\n' + c['text'] }}"
              "{% endif %}{% endfor %}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
# A text-only template in the Qwen2 style (content is a string).
TEXT_ONLY = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
             "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def test_the_checkpoints_processor_template_comes_first(llava_chat, tmp_path):
    """A checkpoint dir's chat_template.json (the processor's, multimodal) wins over the tokenizer's."""
    llava_chat.tokenizer.save_pretrained(tmp_path)
    (tmp_path / "chat_template.json").write_text(json.dumps({"chat_template": MULTIMODAL}))
    tok = llava_chat.tokenizer
    tok.chat_template = TEXT_ONLY
    try:
        ad = type(llava_chat)(llava_chat.model, tok, replace(llava_chat.cfg, pretrained=str(tmp_path)))
        assert ad.chat_template_source() == (MULTIMODAL, "chat_template.json")
        before, after = ad.prompt_text(QUESTION, OPTIONS)
        assert before == "<|im_start|>user " and after == "\n" + MC_TEXT + "<|im_end|>\n<|im_start|>assistant\n"
        text_only = type(llava_chat)(llava_chat.model, tok, llava_chat.cfg)  # no file: the tokenizer's template
        assert text_only.chat_template_source() == (TEXT_ONLY, "tokenizer")
        before, after = text_only.prompt_text(QUESTION, OPTIONS)  # rendered with the video token inline
        assert before == "<|im_start|>user\n" and after == "\n" + MC_TEXT + "<|im_end|>\n<|im_start|>assistant\n"
    finally:
        tok.chat_template = None


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_llava_onevision_unreduced_with_the_chat_prompt_equals_the_hf_forward(llava_chat, attn):
    from transformers import LlavaOnevisionForConditionalGeneration

    torch.manual_seed(1)
    hf_config = llava_chat.hf_config(llava_chat.cfg)
    hf_config._attn_implementation = attn
    ad = type(llava_chat)(LlavaOnevisionForConditionalGeneration(hf_config), llava_chat.tokenizer,
                          replace(llava_chat.cfg, attn_implementation=attn))
    inputs = ad.prepare(frames(), QUESTION, OPTIONS, NoMerge())
    before, after = ad.prompt_text(QUESTION, OPTIONS)
    ids = ad.token_ids(before) + [hf_config.video_token_id] * (inputs.visual_tokens + 1) + ad.token_ids(after)
    with torch.no_grad():
        ref = ad.model(input_ids=torch.tensor([ids]), pixel_values_videos=ad.pixel_values(frames())[None]).logits[0, -1]
    torch.testing.assert_close(ad.prefill_logits(inputs), ref, atol=1e-4, rtol=1e-4)


@pytest.fixture(scope="module")
def qwen_chat():
    """The tiny Qwen2-VL with a tokenizer that has Qwen2-VL's chat and vision-marker tokens."""
    from transformers import AutoTokenizer, Qwen2VLForConditionalGeneration

    from aim.toy import asset_dir

    tok = AutoTokenizer.from_pretrained(asset_dir("toy_llava_ov"))
    tok.add_tokens(QWEN_SPECIALS, special_tokens=True)
    ids = {t: tok.convert_tokens_to_ids(t) for t in QWEN_SPECIALS}
    cfg = model_cfg("qwen2_vl_tiny", [
        f"model.architecture.text_config.vocab_size={len(tok)}",
        f"model.architecture.video_token_id={ids['<|video_pad|>']}",
        f"model.architecture.vision_start_token_id={ids['<|vision_start|>']}",
        f"model.architecture.vision_end_token_id={ids['<|vision_end|>']}"])
    cfg = replace(cfg, chat_template=True, **real_prompt())
    torch.manual_seed(0)
    adapter = MODELS.get("qwen2_vl")
    return adapter(Qwen2VLForConditionalGeneration(adapter.hf_config(cfg)), tok, cfg)


def test_qwen2_vl_chat_prompt_wraps_the_video_in_its_vision_markers(qwen_chat):
    before, after = qwen_chat.prompt_text(QUESTION, OPTIONS)
    assert before == ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
                      "<|vision_start|>")
    assert after == "<|vision_end|>\n" + MC_TEXT + "<|im_end|>\n<|im_start|>assistant\n"


def test_qwen2_vl_unreduced_with_the_chat_prompt_equals_the_hf_forward(qwen_chat):
    ad = qwen_chat
    video = frames(4)
    inputs = ad.prepare(video, QUESTION, OPTIONS, NoMerge())
    before, after = ad.prompt_text(QUESTION, OPTIONS)
    vid = ad.model.config.video_token_id
    ids = ad.token_ids(before) + [vid] * inputs.visual_tokens + ad.token_ids(after)
    assert ad.model.config.vision_start_token_id == ids[len(ad.token_ids(before)) - 1]
    types = torch.tensor([[2 if i == vid else 0 for i in ids]])
    flat, grid = ad.hf_video_inputs(ad.pixel_values(video))
    with torch.no_grad():
        ref = ad.model(input_ids=torch.tensor([ids]), pixel_values_videos=flat, video_grid_thw=grid,
                       mm_token_type_ids=types).logits[0, -1]
    torch.testing.assert_close(ad.prefill_logits(inputs), ref, atol=1e-4, rtol=1e-4)
