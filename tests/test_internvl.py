"""The InternVL3 adapter: unreduced, it is the Hugging Face model (same logits, the processor's own input ids
for the same frames, the checkpoints' chat template, the video processor's pixels); the tower gives mergers
its signals and grid. Tiny random models from the `internvl3_tiny` preset (112 px tiles, patch 7: 16x16
patches, pixel shuffle to 8x8 = 64 tokens per frame). (Merging, pruning, decoding, FLOP counting, the
evaluation loop and aim.bench on it, as on every adapter: tests/test_adapter_contract.py.)"""
import numpy as np
import pytest
import torch

from aim.merging import MERGERS, NoMerge
from aim.models import PREFIX_TEXT, QUESTION_TEXT, VISUAL
from aim.models.internvl import InternVLAdapter
from tests.tiny_models import OPTIONS, QUESTION, adapter_fixtures, build, frames

TOKENS = 64  # per frame: 112 px / 7 = 16x16 patches -> 8x8 after the pixel shuffle
adapter, sdpa_adapter = adapter_fixtures("internvl3_tiny")


def hf_logits(ad, video):
    """Logits at the last position of InternVLForConditionalGeneration given the unreduced input ids and
    the frames' pixels (it splices the tower's tokens in at the context tokens itself)."""
    ids = ad.input_ids(QUESTION, OPTIONS, len(video))
    with torch.no_grad():
        return ad.model(input_ids=torch.tensor([ids]), pixel_values=ad.pixel_values(video)).logits[0, -1]


@pytest.mark.parametrize("num_frames", [1, 4])
def test_unreduced_logits_equal_the_hf_forward(adapter, num_frames):
    inputs = adapter.prepare(frames(num_frames), QUESTION, OPTIONS, NoMerge())
    assert inputs.visual_tokens == num_frames * TOKENS
    assert torch.equal(inputs.position_ids[0], torch.arange(inputs.inputs_embeds.shape[1]))
    torch.testing.assert_close(adapter.prefill_logits(inputs), hf_logits(adapter, frames(num_frames)), atol=1e-4, rtol=1e-4)


def processor_tokenizer():
    """The toy tokenizer with the InternVL processor's special tokens: <img> and </img> added (ids 48, 49),
    <image> as the context token, <video> as the video token."""
    from aim.toy.tokenizer import build_tokenizer

    tok = build_tokenizer()
    tok.add_special_tokens({"additional_special_tokens": ["<img>", "</img>"]})
    for name, token in {"start_image_token": "<img>", "end_image_token": "</img>", "context_image_token": "<image>",
                        "video_token": "<video>"}.items():
        setattr(tok, name, token)
        setattr(tok, f"{name}_id", tok.convert_tokens_to_ids(token))
    return tok


def hf_processor(tok, tokens_per_frame, image_processor=None):
    """InternVLProcessor over `tok` (and `image_processor`, default GotOcr2's PIL one). Its video processor
    needs torchvision (not a dependency here): where it is missing, a stand-in passes the frames through,
    which is all the prompt expansion reads of it (the frame count)."""
    from transformers import BatchFeature, InternVLProcessor
    from transformers.models.got_ocr2.image_processing_pil_got_ocr2 import GotOcr2ImageProcessorPil
    from transformers.processing_utils import ProcessorMixin

    image_processor = image_processor or GotOcr2ImageProcessorPil()
    try:
        from transformers.models.internvl.video_processing_internvl import InternVLVideoProcessor

        return InternVLProcessor(image_processor=image_processor, tokenizer=tok,
                                 video_processor=InternVLVideoProcessor(), image_seq_length=tokens_per_frame)
    except ImportError:
        pass

    class Frames:
        model_input_names = ["pixel_values_videos"]

        def __call__(self, videos=None, **kwargs):
            return BatchFeature({"pixel_values_videos": torch.stack([torch.as_tensor(v).permute(0, 3, 1, 2) for v in videos])})

    check = ProcessorMixin.check_argument_for_proper_class
    ProcessorMixin.check_argument_for_proper_class = lambda self, name, arg: None if name == "video_processor" else check(self, name, arg)
    try:
        return InternVLProcessor(image_processor=image_processor, tokenizer=tok, video_processor=Frames(),
                                 image_seq_length=tokens_per_frame)
    finally:
        ProcessorMixin.check_argument_for_proper_class = check


@pytest.mark.parametrize("num_frames", [1, 3])
def test_video_input_ids_are_the_hf_processor_s(num_frames):
    """The processor writes `Frame{i}: <img>` + 64 context tokens + `</img>` per frame, lines joined by a
    newline, in place of <video>; the adapter's unreduced ids are exactly its ids for the same prompt, and
    its sequence holds the frames' tokens where the context tokens are."""
    tok = processor_tokenizer()
    ad = build("internvl3_tiny", ["model.architecture.text_config.vocab_size=50"])  # room for <img> and </img>
    ad = InternVLAdapter(ad.model, tok, ad.cfg)
    video = frames(num_frames)
    ref = hf_processor(tok, TOKENS)(text=ad.prompt_string(QUESTION, OPTIONS), videos=[video], return_tensors="pt")
    ids = ad.input_ids(QUESTION, OPTIONS, num_frames)
    assert ids == ref["input_ids"][0].tolist()
    assert ids.count(48) == ids.count(49) == num_frames and ids.count(4) == num_frames * TOKENS
    inputs = ad.prepare(video, QUESTION, OPTIONS, NoMerge())
    assert torch.equal(inputs.token_roles == VISUAL, torch.tensor(ids) == 4)
    with torch.no_grad():
        logits = ad.model(input_ids=ref["input_ids"], pixel_values=ad.pixel_values(video)).logits[0, -1]
    torch.testing.assert_close(ad.prefill_logits(inputs), logits, atol=1e-4, rtol=1e-4)


# The chat template transformers' InternVL conversion writes into the -hf checkpoints (convert_internvl_weights_to_hf.py:
# a video part is `<video>\n`, an image part `<IMG_CONTEXT>\n`).
INTERNVL_CHAT = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n'}}{% if message['content'] is string %}"
                 "{{ message['content'] }}{% else %}{% for content in message['content'] %}{% if content['type'] == 'image' %}"
                 "{{ '<IMG_CONTEXT>\n' }}{% elif content['type'] == 'video' %}{{ '<video>\n' }}{% elif content['type'] == 'text' %}"
                 "{{ content['text'] }}{% endif %}{% endfor %}{% endif %}{{'<|im_end|>\n'}}{% endfor %}"
                 "{% if add_generation_prompt %}{{'<|im_start|>assistant\n' }}{% endif %}")


def test_the_chat_prompt_is_the_checkpoint_template_s_with_the_frames_in_place_of_the_video():
    """The real preset's prompt fields in the checkpoints' chat template: `<|im_start|>user\n<video>\n` and the
    multiple-choice text; the processor's ids for that prompt are the adapter's."""
    from dataclasses import replace

    from tests.test_model_presets import MC_TEXT, real_prompt

    tok = processor_tokenizer()
    tok.add_tokens(["<|im_start|>", "<|im_end|>"], special_tokens=True)  # ids 50, 51
    tok.chat_template = INTERNVL_CHAT
    ad = build("internvl3_tiny", ["model.architecture.text_config.vocab_size=52"])
    ad = InternVLAdapter(ad.model, tok, replace(ad.cfg, chat_template=True, **real_prompt()))
    prompt = ad.prompt_string(QUESTION, OPTIONS)
    assert prompt == "<|im_start|>user\n<video>\n" + MC_TEXT + "<|im_end|>\n<|im_start|>assistant\n"
    ref = hf_processor(tok, TOKENS)(text=prompt, videos=[frames(2)], return_tensors="pt")
    assert ad.input_ids(QUESTION, OPTIONS, 2) == ref["input_ids"][0].tolist()
    inputs = ad.prepare(frames(2), QUESTION, OPTIONS, NoMerge())
    assert inputs.visual_tokens == 2 * TOKENS and len(inputs.token_roles) == len(ref["input_ids"][0])


@pytest.mark.parametrize("shape", [(112, 112), (64, 80), (240, 180)])
def test_video_preprocessing_equals_the_hf_video_processor(sdpa_adapter, shape):
    """One tile per frame at the tower's size: the -hf checkpoints' video processor resizes the uint8 frames
    with torchvision's bicubic resize (antialias), rescales by 1/255 and normalizes with InternVL's (ImageNet)
    mean and std; written out here (the same arithmetic as the LLaVA-OneVision test's reference), and
    checked against InternVLVideoProcessor itself where torchvision is installed."""
    from tests.test_adapter import hf_video_processor_pixels

    rng = np.random.default_rng(0)
    h, w = shape
    smooth = np.stack(np.meshgrid(np.linspace(0, 255, w), np.linspace(0, 255, h)), -1).sum(-1) / 2
    video = np.clip(smooth[None, :, :, None] + rng.normal(0, 40, (3, h, w, 3)), 0, 255).astype(np.uint8)
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]))
    expected = (hf_video_processor_pixels(video, 112) * 0.5 + 0.5 - mean) / std  # undo its SigLIP normalization
    torch.testing.assert_close(sdpa_adapter.pixel_values(video), expected, atol=1e-5, rtol=0)
    try:
        from transformers.models.internvl.video_processing_internvl import InternVLVideoProcessor
    except ImportError:  # torchvision is not a dependency of the project
        return
    processor = InternVLVideoProcessor(size={"height": 112, "width": 112}, image_mean=[0.485, 0.456, 0.406],
                                       image_std=[0.229, 0.224, 0.225])
    hf = processor(videos=[video], return_tensors="pt")["pixel_values_videos"][0]
    torch.testing.assert_close(hf, expected, atol=1e-5, rtol=0)


def test_the_layout_of_the_unmerged_sequence(sdpa_adapter):
    """<s> user, then per frame the label's text (Frame{i}: <img>: <unk> tokens with the toy tokenizer),
    64 visual tokens, </img> and the next label; the question after the last frame."""
    inputs = sdpa_adapter.prepare(frames(2), QUESTION, OPTIONS, NoMerge())
    roles = inputs.token_roles.tolist()
    first = roles.index(VISUAL)
    assert roles[:first] == [PREFIX_TEXT] * first and first == 4  # <s> user Frame1: <img>
    assert roles[first:first + TOKENS] == [VISUAL] * TOKENS
    between = roles[first + TOKENS:].index(VISUAL)
    assert between == 3 and roles[first + TOKENS:first + TOKENS + 3] == [QUESTION_TEXT] * 3  # </img> \nFrame2: <img>
    assert inputs.visual_tokens == 2 * TOKENS and set(roles[-10:]) == {QUESTION_TEXT}


def test_tower_signals_and_grid_for_mergers_that_ask(sdpa_adapter):
    ad = sdpa_adapter
    pixels = ad.pixel_values(frames(2))
    enc = ad.encode_frames(pixels, needs=("metric", "attention", "grid"))
    torch.testing.assert_close(enc["features"], ad.visual_features(pixels))
    assert enc["grid"] == (8, 8)
    assert enc["metric"].shape == (2, TOKENS, 32)  # tower width 32, each token's 2x2 patches averaged
    # the [CLS] query's attention over the 256 patches sums to 1 less what it gives itself
    assert enc["attention"].shape == (2, TOKENS) and (enc["attention"] > 0).all()
    assert (enc["attention"].sum(1) * 4 <= 1 + 1e-6).all()
    for name in ("pool", "prumerge_plus"):
        out = ad.prepare(frames(2), QUESTION, OPTIONS, MERGERS.build(name, ratio=0.25))
        assert out.visual_tokens == 2 * 16


@pytest.mark.parametrize("feature_layer,producer", [(-1, 2), (-2, 1), (1, 0)])
def test_the_key_metric_is_that_of_the_tower_layer_that_gives_the_features(feature_layer, producer):
    """`metric`: the keys of the layer whose output the features come from (of 3 layers, hidden_states[-2] is
    layer 1's output, hidden_states[1] layer 0's: hidden_states[0] holds the embeddings), [CLS] left out,
    averaged over each token's 2x2 patches."""
    ad = build("internvl3_tiny", ["model.architecture.vision_config.num_hidden_layers=3",
                f"model.architecture.vision_feature_layer={feature_layer}"])
    pixels = ad.pixel_values(frames(2))
    layer = ad.model.model.vision_tower.encoder.layer[producer]
    keys = []
    handle = layer.attention.k_proj.register_forward_hook(lambda _m, _i, out: keys.append(out))
    with torch.no_grad():
        ad.tower_features(pixels)
    handle.remove()
    patches = keys[0][:, 1:].reshape(2, 8, 2, 8, 2, 32)  # [frames, token row, 2, token col, 2, width]
    expected = patches.mean((2, 4)).reshape(2, TOKENS, 32)
    torch.testing.assert_close(ad.encode_frames(pixels, needs=("metric",))["metric"], expected)


def test_fvcore_counts_the_internvl_tower_and_projector(sdpa_adapter):
    """(The LLM's counts against the analytic model: tests/test_adapter_contract.py.)"""
    from aim.efficiency.fvcore_count import count_visual

    ad = sdpa_adapter
    visual = count_visual(ad, frames(2), MERGERS.build("aim", ratio=0.5))
    # 2 frames x 257 tokens ([CLS] + 256 patches), width 32, 2 layers: q, k, v, projection and MLP (64) at least
    assert visual["vision_tower_flops"] >= 2 * 514 * 2 * (4 * 32**2 + 2 * 32 * 64)
    # the projector: LayerNorm over 128 (fvcore: 5 per element), Linear(128, 64), Linear(64, 64) per token
    assert visual["projector_flops"] == 2 * 128 * (128 * 5 + 128 * 64 + 64 * 64)
    assert visual["merge_flops"] > 0


def test_flops_of_the_tiny_preset_count_its_token_grid():
    from hydra import compose, initialize_config_dir

    from aim.config import validate
    from aim.efficiency.cost import flops
    from aim.paths import CONF_DIR

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        valid = validate(compose("config", overrides=["model=internvl3_tiny", "merger=aim", "merger.ratio=0.25",
                                                      "pruner=aim", "pruner.l1=2", "pruner.l2=4", "dataset.num_frames=4"]))
    result = flops(valid)
    assert (result["frames"], result["tokens_per_frame"], result["kept_per_frame"]) == (4, 64, 16)
    assert result["token_grid"] == [8, 8] and result["visual_tokens_per_layer"] == [64, 64, 32, 0]


def test_without_a_tokenizer_the_frames_labels_are_stand_ins_as_many_as_aim_flops_counts(sdpa_adapter):
    """aim.bench on random weights with no tokenizer cached still prefills the frames' label text: as many
    stand-in tokens as `video_text_tokens` (what aim.flops and budget mode count) says."""
    ad = InternVLAdapter(sdpa_adapter.model, None, sdpa_adapter.cfg)
    visual = torch.zeros(12, ad.tokens_per_frame, ad.model.config.text_config.hidden_size)
    index = torch.arange(ad.tokens_per_frame).expand(12, -1)
    inputs = ad.assemble([1, 2], visual, index, [3])
    assert inputs.text_tokens == 3 + InternVLAdapter.video_text_tokens(ad.model.config, ad.cfg, 12)
    assert InternVLAdapter.video_text_tokens(None, None, 32) == 246
