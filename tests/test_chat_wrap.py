"""The chat wrap of the real presets is the conversation lmms-eval's model class for the family builds
(`model.chat_wrap=lmms_eval`), character for character; the checkpoint's own template stays available (`hf`).

The expected strings were produced by running the original conversation code on the fixture texts (in a scratch
dir, not in the project), as lmms-eval's model classes call it (EvolvingLMMs-Lab/lmms-eval at commit
75571cfe0fa36ca5ec2e6aa2bb268f9d38295af3, lmms_eval/models/simple/...):
  llava_onevision.py (conv_template qwen_1_5; llava_vid.py is run with the same for LLaVA-Video) and llava.py
  (conv_template vicuna_v1): "<image>" + "\\n" + context, then LLaVA-NeXT's llava/conversation.py
  (LLaVA-VL/LLaVA-NeXT at df179663ae8b83207df100a1f7af24caec633ff9) conv_templates[...].get_prompt();
  internvl3.py: "Frame{i}: <image>\\n" per frame + context (a video), "<image>\\n" + context (an image), then
  model.chat(): InternVL's get_conv_template("internvl2_5") with its system message
  (OpenGVLab/InternVL internvl_chat/internvl/conversation.py at 2410d1dbf208f0e799459aff9376e5747dbf41a2),
  each <image> replaced by "<img>" + <IMG_CONTEXT> x (256 x tiles) + "</img>";
  qwen2_vl.py / qwen2_5_vl.py / qwen3_vl.py: processor.apply_chat_template([{"role": "system", "content":
  "You are a helpful assistant."}, {"role": "user", "content": [visual, {"type": "text", "text": context}]}]),
  rendered with Qwen2-VL-Instruct's chat template (Qwen2.5-VL's and Qwen3-VL's write the same for these messages).
Tokenizers of the real checkpoints cannot be downloaded here: the strings are compared before tokenization, with
the tiny presets' architectures (their token ids) and the toy tokenizer.
"""
import functools
from dataclasses import replace

import pytest
import torch

from aim.models import MODELS, PREFIX_TEXT, QUESTION_TEXT, VISUAL
from aim.models.base import Conversation
from tests.test_model_presets import model_cfg as compose_model


@functools.lru_cache(maxsize=None)
def model_cfg(name, overrides=()):
    return compose_model(name, list(overrides))

# the fixture texts: lmms-eval's MVBench prompt (it ends with a newline) and its ScienceQA-IMG prompt
MVBENCH = ("Question:What is the action performed by the person in the video?\nOption:\n(A) Not sure\n"
           "(B) Scattering something down\n(C) Piling something up\nOnly give the best option.\n")
SQA = ("Context: The map shows a state.\nWhich state is highlighted?\nA. Ohio\nB. Iowa\nC. Utah\n"
       "Answer with the option's letter from the given choices directly.")
TEXTS = {"video": MVBENCH, "image": SQA}
INTERNVL_SYSTEM = "你是书生·万象，英文名是InternVL，是由上海人工智能实验室、清华大学及多家合作单位联合开发的多模态大语言模型。"

# lmms-eval's full prompt strings (the output of the scratch run, verbatim)
LMMS_EVAL = {
    ("llava_onevision", "video"):
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n<image>\nQuestion:What is the "
        "action performed by the person in the video?\nOption:\n(A) Not sure\n(B) Scattering something down\n(C) Piling "
        "something up\nOnly give the best option.\n<|im_end|>\n<|im_start|>assistant\n",
    ("llava_onevision", "image"):
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n<image>\nContext: The map shows a "
        "state.\nWhich state is highlighted?\nA. Ohio\nB. Iowa\nC. Utah\nAnswer with the option's letter from the given "
        "choices directly.<|im_end|>\n<|im_start|>assistant\n",
    ("llava", "image"):
        "A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, detailed, "
        "and polite answers to the user's questions. USER: <image>\nContext: The map shows a state.\nWhich state is "
        "highlighted?\nA. Ohio\nB. Iowa\nC. Utah\nAnswer with the option's letter from the given choices directly. "
        "ASSISTANT:",
    ("internvl", "video"):  # two frames
        "<|im_start|>system\n" + INTERNVL_SYSTEM + "<|im_end|>\n<|im_start|>user\nFrame1: <image>\nFrame2: <image>\n"
        "Question:What is the action performed by the person in the video?\nOption:\n(A) Not sure\n(B) Scattering "
        "something down\n(C) Piling something up\nOnly give the best option.\n<|im_end|>\n<|im_start|>assistant\n",
    ("internvl", "image"):
        "<|im_start|>system\n" + INTERNVL_SYSTEM + "<|im_end|>\n<|im_start|>user\n<image>\nContext: The map shows a "
        "state.\nWhich state is highlighted?\nA. Ohio\nB. Iowa\nC. Utah\nAnswer with the option's letter from the given "
        "choices directly.<|im_end|>\n<|im_start|>assistant\n",
    ("qwen", "video"):
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n<|vision_start|><|video_pad|>"
        "<|vision_end|>Question:What is the action performed by the person in the video?\nOption:\n(A) Not sure\n(B) "
        "Scattering something down\n(C) Piling something up\nOnly give the best option.\n<|im_end|>\n<|im_start|>assistant\n",
    ("qwen", "image"):
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n<|vision_start|><|image_pad|>"
        "<|vision_end|>Context: The map shows a state.\nWhich state is highlighted?\nA. Ohio\nB. Iowa\nC. Utah\nAnswer "
        "with the option's letter from the given choices directly.<|im_end|>\n<|im_start|>assistant\n",
}
# the real presets' prompt fields (checked against their files below)
REAL_PROMPT = {"prompt_template": "<video>\n{prompt}", "likelihood_template": "<video>\n{prompt}"}
QWEN_TOKENS = ["<|vision_start|>", "<|vision_end|>", "<|video_pad|>", "<|image_pad|>"]


def toy_tokenizer(extra=()):
    from transformers import AutoTokenizer

    from aim.toy import asset_dir

    tok = AutoTokenizer.from_pretrained(asset_dir("toy_llava_ov"))
    tok.add_tokens(list(extra), special_tokens=True)
    return tok


def wrapped(tiny: str, overrides=(), tokens=(), **fields):
    """A prompt-only adapter (no weights) of a tiny preset with the real presets' prompt fields and the lmms-eval
    wrap (or `fields`)."""
    tok = toy_tokenizer(tokens)
    ids = {t: tok.convert_tokens_to_ids(t) for t in tokens}
    arch = {"<|video_pad|>": "video_token_id", "<|image_pad|>": "image_token_id",
            "<|vision_start|>": "vision_start_token_id", "<|vision_end|>": "vision_end_token_id"}
    overrides = [*overrides, *(f"model.architecture.{arch[t]}={i}" for t, i in ids.items())]
    if tokens:
        overrides.append(f"model.architecture.text_config.vocab_size={len(tok)}")
    cfg = replace(model_cfg(tiny, tuple(overrides)), chat_template=True, **{"chat_wrap": "lmms_eval", **REAL_PROMPT, **fields})
    cls = MODELS.get(cfg.name)
    shell = torch.nn.Module()
    shell.config = cls.hf_config(cfg)
    return cls(shell, tok, cfg)


def prompt(adapter, modality):
    """The whole prompt the adapter builds for the fixture text (a question without options is laid out as is)."""
    return adapter.prompt_string(TEXTS[modality], [], modality=modality)


@pytest.mark.parametrize("tiny,family,modality", [("llava_onevision_tiny", "llava_onevision", "video"),
                                                  ("llava_onevision_tiny", "llava_onevision", "image"),
                                                  ("llava_1.5_tiny", "llava", "image")])
def test_llava_families_wrap_the_task_text_in_lmms_evals_conversation(tiny, family, modality):
    """LLaVA-OneVision / LLaVA-Video: LLaVA-NeXT's qwen_1_5 conversation; LLaVA-1.5: vicuna_v1. lmms-eval writes
    the original code's <image> placeholder where aim writes the model's visual token (LLaVA-OneVision's <video>
    for a video: the Hugging Face model's; the same features stand there)."""
    ad = wrapped(tiny)
    text = prompt(ad, modality)
    token = ad.visual_token(modality)
    assert text.count(token) == 1
    assert text.replace(token, "<image>") == LMMS_EVAL[family, modality]


@pytest.mark.parametrize("tiny", ["qwen2_vl_tiny", "qwen2_5_vl_tiny", "qwen3_vl_tiny"])
@pytest.mark.parametrize("modality", ["video", "image"])
def test_qwen_families_wrap_as_lmms_evals_messages_in_the_qwen_template(tiny, modality):
    """The visual part then the text part with nothing between them (the prompt template's newline goes), after
    lmms-eval's system turn."""
    assert prompt(wrapped(tiny, tokens=QWEN_TOKENS), modality) == LMMS_EVAL["qwen", modality]


def test_internvl_wraps_a_video_as_internvl3s_chat_does():
    """The <video> placeholder becomes one `Frame{i}: <img>...</img>` line per frame (the HF processor's text, which
    is also what chat() makes of lmms-eval's `Frame{i}: <image>\\n` lines) inside InternVL's internvl2_5
    conversation with its system message."""
    ad = wrapped("internvl3_tiny")
    image_tokens = "<img>" + ad.context_token() * ad.tokens_per_frame + "</img>"
    ours = prompt(ad, "video").replace(ad.visual_token("video"), ad.video_text(2))
    assert ours == LMMS_EVAL["internvl", "video"].replace("<image>", image_tokens)
    tiles = 3
    ours = prompt(ad, "image").replace(ad.visual_token("image"), ad.image_text(tiles))
    assert ours == LMMS_EVAL["internvl", "image"].replace("<image>", "<img>" + ad.context_token() * (ad.tokens_per_frame * tiles) + "</img>")


def test_a_system_prompt_replaces_the_conversations_system_text():
    ad = wrapped("llava_onevision_tiny", system_prompt="Be brief.")
    assert prompt(ad, "video").startswith("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n")
    # LLaVA-NeXT's ChatML drops an empty system turn
    assert prompt(wrapped("llava_onevision_tiny", system_prompt=""), "video").startswith("<|im_start|>user\n")


def test_the_conversation_renders_its_parts_in_order():
    conv = Conversation(system="S", system_turn="[{system}]", user_turn="<{content}>", adjacent=True)
    assert conv.render("a \n", "V", "\n b", None) == "[S]<aVb>"
    assert conv.render("", "V", "x", "T") == "[T]<Vx>"
    assert replace(conv, adjacent=False).render("a ", "V", " b") == "[S]<a V b>"


# A template in the llava-hf LLaVA-OneVision style (a space after the role, no system turn), written for this test.
HF_STYLE = ("{% for m in messages %}<|im_start|>{{ m['role'] }} {% for c in m['content'] %}{% if c['type'] == 'video' %}"
            "<video>{% endif %}{% endfor %}{% for c in m['content'] %}{% if c['type'] == 'text' %}{{ '\\n' + c['text'] }}"
            "{% endif %}{% endfor %}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def test_chat_wrap_hf_keeps_the_checkpoints_own_template(tmp_path):
    ad = wrapped("llava_onevision_tiny")
    ad.tokenizer.save_pretrained(tmp_path)
    (tmp_path / "chat_template.jinja").write_text(HF_STYLE)
    hf = type(ad)(ad.model, ad.tokenizer, replace(ad.cfg, pretrained=str(tmp_path), chat_wrap="hf"))
    lmms = type(ad)(ad.model, ad.tokenizer, replace(ad.cfg, pretrained=str(tmp_path)))
    assert hf.prompt_string("Q?", []) == "<|im_start|>user <video>\nQ?<|im_end|>\n<|im_start|>assistant\n"
    assert lmms.prompt_string("Q?", []) == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n<video>\nQ?<|im_end|>\n"
        "<|im_start|>assistant\n")


def test_an_unknown_chat_wrap_is_a_config_error():
    from aim.config import ConfigError

    with pytest.raises(ConfigError, match="chat_wrap: 'vllm' is not allowed; choose one of: lmms_eval, hf"):
        compose_model("llava_onevision_7b", ["model.chat_wrap=vllm", "pruner=none"])


REAL = ["llava_onevision_0.5b", "llava_onevision_7b", "llava_onevision_72b", "llava_video_7b", "llava_1.5_7b",
        "internvl3_8b", "qwen2_vl_7b", "qwen2_5_vl_3b", "qwen2_5_vl_7b", "qwen3_vl_2b", "qwen3_vl_4b", "qwen3_vl_8b"]
TINY = ["toy_llava_ov", "llava_onevision_tiny", "llava_1.5_tiny", "internvl3_tiny", "qwen2_vl_tiny", "qwen2_5_vl_tiny",
        "qwen3_vl_tiny"]


def test_the_real_presets_wrap_as_lmms_eval_and_the_tiny_ones_keep_their_plain_prompt():
    """The bundled toy model and the tiny presets were trained / fixed on their plain prompt: no chat wrap."""
    from omegaconf import OmegaConf

    from aim.paths import CONF_DIR

    presets = {p: OmegaConf.load(CONF_DIR / "model" / f"{p}.yaml") for p in REAL + TINY}
    assert {p: (presets[p].chat_template, presets[p].chat_wrap) for p in REAL} == {p: (True, "lmms_eval") for p in REAL}
    assert {p: presets[p].chat_template for p in TINY} == {p: False for p in TINY}
    spelled = {p: presets[p].prompt_template.replace("<image>", "<video>") for p in REAL}
    assert spelled == {p: REAL_PROMPT["prompt_template"] for p in REAL}


def test_the_visual_tokens_are_spliced_where_the_lmms_eval_string_puts_them():
    """LLaVA-OneVision tiny (random weights) with the lmms-eval wrap: the sequence is the tokens of the string before
    the video (the system turn, the user's role), the video's tokens, then the tokens of the text after it."""
    from dataclasses import asdict

    from aim.merging import NoMerge
    from tests.test_model_presets import frames

    cfg = replace(model_cfg("llava_onevision_tiny"), chat_template=True, chat_wrap="lmms_eval", **REAL_PROMPT)
    torch.manual_seed(0)
    ad = MODELS.get("llava_onevision").from_config(**asdict(cfg))
    text_before, text_after = ad.prompt_text("Q?", ["a", "b"])
    assert text_before == "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
    assert text_after.startswith("\nQ?\nA. a\nB. b")
    before, after = ad.prompt_ids("Q?", ["a", "b"])
    inputs = ad.prepare(frames(), "Q?", ["a", "b"], NoMerge())
    roles, embeds, n = inputs.token_roles.tolist(), inputs.inputs_embeds[0], inputs.visual_tokens
    assert roles[:len(before)] == [PREFIX_TEXT] * len(before)
    assert roles[len(before):len(before) + n] == [VISUAL] * n
    assert roles[-len(after):] == [QUESTION_TEXT] * len(after)
    torch.testing.assert_close(embeds[:len(before)], ad.embed_tokens(before))
    torch.testing.assert_close(embeds[-len(after):], ad.embed_tokens(after))


def test_internvl_ids_under_the_lmms_eval_wrap_are_the_processors_for_that_string():
    """InternVL3 tiny with the lmms-eval wrap: the unreduced ids are what the InternVL processor makes of the same
    string (each frame's context tokens where its `Frame{i}: <img>...</img>` line puts them), and the prefill
    sequence holds the frames' tokens exactly there."""
    from aim.merging import NoMerge
    from tests.test_internvl import TOKENS, hf_processor, processor_tokenizer
    from tests.tiny_models import OPTIONS, QUESTION, build, frames
    from aim.models.internvl import InternVLAdapter

    tok = processor_tokenizer()
    tok.add_tokens(["<|im_start|>", "<|im_end|>"], special_tokens=True)
    ad = build("internvl3_tiny", ["model.architecture.text_config.vocab_size=52"])
    ad = InternVLAdapter(ad.model, tok, replace(ad.cfg, chat_template=True, chat_wrap="lmms_eval", **REAL_PROMPT))
    prompt = ad.prompt_string(QUESTION, OPTIONS)
    assert prompt.startswith("<|im_start|>system\n" + INTERNVL_SYSTEM + "<|im_end|>\n<|im_start|>user\n<video>\n")
    ids = ad.input_ids(QUESTION, OPTIONS, 2)
    assert ids == hf_processor(tok, TOKENS)(text=prompt, videos=[frames(2)], return_tensors="pt")["input_ids"][0].tolist()
    inputs = ad.prepare(frames(2), QUESTION, OPTIONS, NoMerge())
    assert torch.equal(inputs.token_roles == VISUAL, torch.tensor(ids) == ad.model.config.image_token_id)
