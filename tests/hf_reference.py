"""The Hugging Face Qwen-VL models' own forward on a video prompt: the reference the Qwen2-VL, Qwen2.5-VL and
Qwen3-VL adapters' unreduced sequences are checked against."""
import torch


def qwen_hf_forward(ad, ids: list[int], video, **rope_inputs):
    """Logits at the last position and M-RoPE positions (get_rope_index) of the adapter's Hugging Face model
    given `ids` with the model's video tokens where the video goes (marked 2 in mm_token_type_ids, as the
    processor marks them), the video's pixels in the processor's layout and `rope_inputs` (Qwen2.5-VL's
    second_per_grid_ts)."""
    video_token = ad.model.config.video_token_id
    input_ids = torch.tensor([ids])
    types = torch.tensor([[2 if i == video_token else 0 for i in ids]])
    flat, grid = ad.hf_video_inputs(ad.pixel_values(video))
    with torch.no_grad():
        logits = ad.model(input_ids=input_ids, pixel_values_videos=flat, video_grid_thw=grid, mm_token_type_ids=types,
                          **rope_inputs).logits[0, -1]
    positions, _ = ad.model.model.get_rope_index(input_ids, types, video_grid_thw=grid, **rope_inputs)
    return logits, positions
