"""The Qwen2.5-VL adapter: unreduced, it is the Hugging Face model (same logits, same absolute-time M-RoPE
positions as the processor's `second_per_grid_ts` gives, from the decoded video's own frame rate); the tower's
features and signals are in merger-window order. Tiny random models from the `qwen2_5_vl_tiny` preset (window
attention in the tower's first block, full attention in its last). (Merging, pruning, decoding, FLOP counting,
the evaluation loop and aim.bench on it, as on every adapter: tests/test_adapter_contract.py.)"""
from dataclasses import replace

import pytest
import torch

from aim.merging import MERGERS, NoMerge
from aim.models import QUESTION_TEXT, VISUAL
from aim.models.qwen2_5_vl import Qwen2_5VLAdapter
from aim.pruning import PRUNERS
from tests.hf_reference import qwen_hf_forward
from tests.tiny_models import OPTIONS, QUESTION, adapter_fixtures, frames, preset

adapter, sdpa_adapter = adapter_fixtures("qwen2_5_vl_tiny")


def hf_reference(ad, video, frame_times=None, seconds=None):
    """Logits at the last position and M-RoPE positions of Qwen2_5_VLForConditionalGeneration given
    input_ids with video placeholders, the processor-layout pixels and `second_per_grid_ts` (`seconds`,
    default the adapter's own for `frame_times`)."""
    inputs = ad.prepare(video, QUESTION, OPTIONS, NoMerge(), frame_times=frame_times)
    before, after = ad.prompt_text(QUESTION, OPTIONS)
    ids = ad.token_ids(before) + [ad.model.config.video_token_id] * inputs.visual_tokens + ad.token_ids(after)
    seconds = torch.tensor([ad.seconds_per_group(frame_times) if seconds is None else seconds])
    return (inputs, *qwen_hf_forward(ad, ids, video, second_per_grid_ts=seconds))


@pytest.mark.parametrize("num_frames", [2, 4, 5])
def test_unreduced_logits_and_positions_equal_the_hf_forward(adapter, num_frames):
    inputs, ref_logits, ref_positions = hf_reference(adapter, frames(num_frames))
    assert inputs.visual_tokens == -(-num_frames // 2) * 49
    assert torch.equal(inputs.position_ids, ref_positions)
    torch.testing.assert_close(adapter.prefill_logits(inputs), ref_logits, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("fps", [2.0, 4.0, 0.5])
def test_video_temporal_positions_follow_the_frame_rate_as_the_processor_s(sdpa_adapter, fps):
    """Temporal patch g sits at g * tokens_per_second * 2 / fps (2 frames per patch): at 2 fps, 0, 2, 4;
    at 0.5 fps, 0, 8, 16. The unreduced positions equal Hugging Face's get_rope_index given
    second_per_grid_ts = 2 / fps, up to the text after the video, and there too while the video's last
    time stays below its rows and columns (past them transformers 5.24 restarts the text inside the
    video's times; the adapter starts it one past them, see the next test)."""
    ad = Qwen2_5VLAdapter(sdpa_adapter.model, sdpa_adapter.tokenizer, replace(sdpa_adapter.cfg, fps=fps))
    inputs, _, ref_positions = hf_reference(ad, frames(6))
    up_to_video = inputs.token_roles != QUESTION_TEXT
    assert torch.equal(inputs.position_ids[..., up_to_video], ref_positions[..., up_to_video])
    if fps >= 2.0:  # last time 4 or 2 < 7 rows
        assert torch.equal(inputs.position_ids, ref_positions)
    t = inputs.position_ids[0, 0, inputs.token_roles == VISUAL].view(3, 49)[:, 0]
    step = int(2 * 2 / fps)
    assert t.tolist() == [2, 2 + step, 2 + 2 * step]


def test_text_after_the_video_starts_past_its_largest_time(sdpa_adapter):
    """At 0.25 fps the last temporal patch of 3 sits at time 2 * 16 = 32 > 7 rows: the text starts one past
    it (Qwen2-VL's rule: one past the video's largest position), so it never overlaps the video's times."""
    ad = Qwen2_5VLAdapter(sdpa_adapter.model, sdpa_adapter.tokenizer, replace(sdpa_adapter.cfg, fps=0.25))
    inputs = ad.prepare(frames(6), QUESTION, OPTIONS, NoMerge())
    text_after = inputs.position_ids[:, 0, inputs.token_roles == QUESTION_TEXT]
    assert text_after[:, 0].tolist() == [2 + 32 + 1] * 3


def sampled(tmp_path, fps, num_frames=4):
    """A 16-frame video written at `fps` frames per second, `num_frames` of its frames sampled as a benchmark
    sample loads them (aim.data.Sample): the frames and their times."""
    from aim.data import Sample
    from aim.data import synthetic as syn

    path = tmp_path / f"clip_{fps}fps.mp4"
    syn.write_video(path, syn.render(syn.sample_item(0, 0)[0]), fps=fps)
    sample = Sample(id="v", question=QUESTION, options=OPTIONS, answer="A", video=path, num_frames=num_frames)
    frames, _ = sample.load()
    return frames, sample.frame_times


# the video's last temporal position stays below its 7 rows, where transformers 5.24 puts the text after
# the video where the adapter does (see test_text_after_the_video_starts_past_its_largest_time)
@pytest.mark.parametrize("fps,num_frames", [(8, 4), (8, 8), (4, 4), (30, 6)])
def test_a_decoded_video_s_own_rate_gives_the_processor_s_positions(sdpa_adapter, tmp_path, fps, num_frames):
    """The frames sampled from a video of 16 frames at `fps` come with the rate Hugging Face's processor
    computes from the same sampling (VideoMetadata.sampled_fps: sampled frames over the video's duration),
    and the unreduced positions and logits equal the Hugging Face model's given its second_per_grid_ts =
    temporal_patch_size / that rate, whatever `model.fps` says."""
    from transformers.video_utils import VideoMetadata

    from aim.data.video import uniform_frame_indices

    ad = Qwen2_5VLAdapter(sdpa_adapter.model, sdpa_adapter.tokenizer, replace(sdpa_adapter.cfg, fps=7.0))
    frames, times = sampled(tmp_path, fps, num_frames)
    meta = VideoMetadata(total_num_frames=16, fps=fps, frames_indices=uniform_frame_indices(16, num_frames))
    assert times.sampled_fps == pytest.approx(meta.sampled_fps) and len(times.seconds) == num_frames
    inputs, ref_logits, ref_positions = hf_reference(ad, frames, times, seconds=2 / meta.sampled_fps)
    assert torch.equal(inputs.position_ids, ref_positions)
    torch.testing.assert_close(ad.prefill_logits(inputs), ref_logits, atol=1e-4, rtol=1e-4)


def test_two_sampling_rates_give_different_temporal_positions(sdpa_adapter, tmp_path):
    """The same 4 frames from a video at 8 fps (2 s: 2 sampled frames a second, one temporal patch a
    second) and at 2 fps (8 s: one temporal patch every 4 s): temporal positions 0, 2 and 0, 8 past the
    text (tokens_per_second 2); the spatial ones do not change."""
    (fast_frames, fast_times), (slow_frames, slow_times) = sampled(tmp_path, 8), sampled(tmp_path, 2)
    fast = sdpa_adapter.prepare(fast_frames, QUESTION, OPTIONS, NoMerge(), frame_times=fast_times)
    slow = sdpa_adapter.prepare(slow_frames, QUESTION, OPTIONS, NoMerge(), frame_times=slow_times)
    times = lambda x: x.position_ids[0, 0, x.token_roles == VISUAL].view(2, 49)[:, 0].tolist()  # noqa: E731
    assert times(fast) == [2, 2 + 2] and times(slow) == [2, 2 + 8]
    visual = lambda x: x.position_ids[1:, 0, x.token_roles == VISUAL]  # noqa: E731
    assert torch.equal(visual(fast), visual(slow))


def test_model_fps_is_the_rate_only_where_the_frame_times_are_unknown(sdpa_adapter, tmp_path):
    frames, times = sampled(tmp_path, 8)
    ad = Qwen2_5VLAdapter(sdpa_adapter.model, sdpa_adapter.tokenizer, replace(sdpa_adapter.cfg, fps=0.5))
    assert ad.frame_rate(times) == pytest.approx(2.0) and ad.frame_rate(None) == 0.5
    capped = Qwen2_5VLAdapter(sdpa_adapter.model, sdpa_adapter.tokenizer, replace(sdpa_adapter.cfg, max_frames=2))
    assert capped.frame_rate(times) == pytest.approx(1.0)  # 2 of the 4 sampled frames seen: half the rate


def test_the_evaluation_loop_gives_prepare_each_sample_s_frame_times(sdpa_adapter, small_benchmark, tmp_path,
                                                                     monkeypatch):
    from aim.data import VideoMCQDataset
    from aim.eval import evaluate
    from aim.tracking.records import SampleRecords

    given = []
    prepare = sdpa_adapter.prepare
    monkeypatch.setattr(sdpa_adapter, "prepare", lambda *a, **k: given.append(k["frame_times"]) or prepare(*a, **k))
    dataset = VideoMCQDataset(small_benchmark, num_frames=4, limit=2)
    evaluate(sdpa_adapter, dataset, MERGERS.build("aim", ratio=0.25), PRUNERS.build("aim", l1=2, l2=4),
             SampleRecords(tmp_path / "samples.jsonl"), mode="letter", progress=False)
    assert len(given) == 2 and all(t is not None and len(t.seconds) == 4 for t in given)
    assert [t.sampled_fps for t in given] == [s.frame_times.sampled_fps for s in dataset]


def test_tower_features_are_in_merger_window_order_despite_window_attention(sdpa_adapter):
    """The projected tower features are the Hugging Face tower's own merged output (which undoes its
    window order), and the tower signals are in the same order: a token's key metric is the mean over its
    own 4 patches."""
    ad = sdpa_adapter
    pixels = ad.pixel_values(frames(4))
    flat, grid = ad.hf_video_inputs(pixels)
    with torch.no_grad():
        hf = ad.model.model.visual(flat, grid_thw=grid).pooler_output
    torch.testing.assert_close(ad.visual_features(pixels).reshape(hf.shape), hf)
    order = ad.window_order(grid)
    assert not torch.equal(order, torch.arange(len(order)))  # the tiny tower really permutes
    enc = ad.encode_frames(pixels, needs=("metric", "attention"))
    torch.testing.assert_close(enc["features"], ad.visual_features(pixels))
    attn = ad.model.model.visual.blocks[-1].attn
    captured = {}
    handle = attn.register_forward_pre_hook(lambda m, a, k: captured.update(h=a[0] if a else k["hidden_states"]),
                                            with_kwargs=True)
    with torch.no_grad():
        ad.tower_features(pixels)
    handle.remove()
    keys = attn.qkv(captured["h"])[:, 32:64].view(-1, 4, 32)[torch.argsort(order)].mean(1)
    torch.testing.assert_close(enc["metric"].reshape(-1, 32), keys)
    torch.testing.assert_close(enc["attention"].mean(1), torch.full((2,), 1 / 196), atol=1e-6, rtol=0)


def test_fps_must_be_positive():
    with pytest.raises(Exception, match=r"fps: must be in \(0, inf\)"):
        preset("qwen2_5_vl_tiny", ["model.fps=0"])
