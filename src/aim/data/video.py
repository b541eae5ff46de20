"""Video decoding with PyAV and uniform frame sampling. Errors surface as VideoDecodeError, per video."""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np


class VideoDecodeError(RuntimeError):
    """A video that cannot be opened or decoded; the evaluation records the sample as skipped."""


@dataclass(frozen=True)
class FrameTimes:
    """When the sampled frames of a video were shown: what models with absolute time read (Qwen2.5-VL's
    temporal M-RoPE) and what picks the subtitle lines at the frames."""

    seconds: list[float]  # each sampled frame's time in the video
    # frames sampled per second of video: the sampled frames over the video's duration (its decoded frame
    # count / its average frame rate), as Hugging Face's VideoMetadata.sampled_fps, which Qwen2.5-VL's
    # processor turns into second_per_grid_ts = temporal_patch_size / sampled_fps
    sampled_fps: float


def uniform_frame_indices(total_frames: int, num_frames: int) -> list[int]:
    """Indices of num_frames frames spread uniformly over the video (the centre of each of num_frames
    equal segments). With fewer frames than asked, every frame is used once. aim's own rule
    (`frame_sampling: segment_middle`)."""
    _check_counts(total_frames, num_frames)
    if num_frames >= total_frames:
        return list(range(total_frames))
    edges = np.linspace(0, total_frames, num_frames + 1)
    return [int(i) for i in np.floor((edges[:-1] + edges[1:]) / 2)]


def linspace_frame_indices(total_frames: int, num_frames: int) -> list[int]:
    """lmms-eval's LLaVA-OneVision / llava_hf rule (`load_video`): num_frames indices evenly spaced from the
    first frame to the last, both included, truncated to integers: np.linspace(0, n - 1, k, dtype=int). A
    video shorter than num_frames repeats frames (num_frames are always returned, as decord's get_batch
    returns them)."""
    _check_counts(total_frames, num_frames)
    return [int(i) for i in np.linspace(0, total_frames - 1, num_frames, dtype=int)]


def internvl_frame_indices(total_frames: int, num_frames: int) -> list[int]:
    """lmms-eval's InternVL3 rule (`get_index` without a time bound, InternVL's own video demo): the span from
    the first frame to the last, n - 1 frames long, cut into num_frames segments of s = (n - 1) / k frames;
    frame i is int(s / 2 + round(s * i)). The last frame is never forced; a short video repeats frames."""
    _check_counts(total_frames, num_frames)
    segment = (total_frames - 1) / num_frames
    return [int(segment / 2 + np.round(segment * i)) for i in range(num_frames)]


def rounded_linspace_frame_indices(total_frames: int, num_frames: int) -> list[int]:
    """lmms-eval's Qwen3-VL rule (its `nframes=max_num_frames` to qwen-vl-utils): k = num_frames rounded to an
    even count, torch.linspace(0, n - 1, k) (float32) rounded half to even; a short video repeats frames
    (qwen-vl-utils itself refuses more frames than the video has)."""
    import torch

    _check_counts(total_frames, num_frames)
    count = max(2, round(num_frames / 2) * 2)
    return [int(i) for i in torch.linspace(0, total_frames - 1, count).round().long()]


def qwen_fps_frame_indices(total_frames: int, num_frames: int, video_fps: float) -> list[int]:
    """lmms-eval's Qwen2-VL / Qwen2.5-VL rule: qwen-vl-utils first reads the video at 2 frames a second
    (m = n / video_fps * 2 frames, clamped to [4, min(768, n)] and floored to an even count, at
    torch.linspace(0, n - 1, m) rounded), then lmms-eval keeps num_frames of those, np.linspace(0, m - 1, k)
    truncated, each once (np.unique: a short video gives fewer than num_frames; the last is always among them)."""
    import torch

    _check_counts(total_frames, num_frames)
    most = math.floor(min(768, total_frames) / 2) * 2
    read = math.floor(min(max(total_frames / video_fps * 2.0, 4), most, total_frames) / 2) * 2
    read = max(read, 1)  # a video of one frame: qwen-vl-utils refuses it; aim reads the frame
    first = torch.linspace(0, total_frames - 1, read).round().long().tolist()
    keep = np.unique(np.linspace(0, read - 1, num_frames, dtype=int))
    return [int(first[i]) for i in keep]


# model.frame_sampling: which frames of a video the model sees, by the rule of the lmms-eval model class;
# each (frames in the video, frames asked, the video's average frame rate) -> indices
FRAME_SAMPLING = {
    "segment_middle": lambda n, k, fps: uniform_frame_indices(n, k),
    "linspace": lambda n, k, fps: linspace_frame_indices(n, k),
    "internvl": lambda n, k, fps: internvl_frame_indices(n, k),
    "rounded_linspace": lambda n, k, fps: rounded_linspace_frame_indices(n, k),
    "qwen_fps": qwen_fps_frame_indices,
}


def frame_indices(total_frames: int, num_frames: int, rule: str = "segment_middle",
                  video_fps: float | None = None) -> list[int]:
    """The indices `rule` (a FRAME_SAMPLING name) picks, in order; they may repeat for a short video, and
    qwen_fps (which needs `video_fps`, the video's average frame rate) may give fewer than num_frames."""
    if rule not in FRAME_SAMPLING:
        raise ValueError(f"frame_sampling: {rule!r} is not allowed; choose one of: {', '.join(FRAME_SAMPLING)}")
    if rule == "qwen_fps" and not video_fps:
        raise ValueError("frame_sampling: qwen_fps needs the video's frame rate (video_fps)")
    return FRAME_SAMPLING[rule](total_frames, num_frames, video_fps)


def _check_counts(total_frames: int, num_frames: int) -> None:
    if total_frames < 1:
        raise ValueError("a video needs at least one frame")
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")


def decode_frames(path: str | Path, num_frames: int, rule: str = "segment_middle") -> np.ndarray:
    """Decode a video and return num_frames uniformly sampled RGB frames as uint8 [T, H, W, 3]."""
    return decode_frames_with_times(path, num_frames, rule)[0]


def decode_frames_with_times(path: str | Path, num_frames: int,
                             rule: str = "segment_middle") -> tuple[np.ndarray, FrameTimes]:
    """num_frames RGB frames sampled by `rule` (FRAME_SAMPLING), uint8 [T, H, W, 3], and their times
    (`FrameTimes`); a rule that repeats a frame (a video shorter than num_frames) returns it as often.

    Only the sampled frames are converted to RGB (a benchmark video can be an hour long), so the frame
    count comes first: from the container's metadata, else by counting packets. Should fewer frames
    decode than the metadata promised, the sampling is redone over the frames that do decode.
    """
    import av

    try:
        total, video_fps = _frame_count(path)
        wanted = frame_indices(total, num_frames, rule, video_fps) if total else []
        frames, times, decoded, rate = _decode_at(path, wanted)
        if decoded and len(frames) < len(wanted):
            total = decoded
            frames, times, _, rate = _decode_at(path, frame_indices(decoded, num_frames, rule, video_fps))
    except (av.FFmpegError, OSError, IndexError, ValueError) as exc:
        raise VideoDecodeError(f"cannot decode {path}: {exc}") from exc
    if not frames:
        raise VideoDecodeError(f"cannot decode {path}: no video frames")
    return np.stack(frames), FrameTimes(seconds=times, sampled_fps=len(frames) / total * rate)


def _frame_count(path) -> tuple[int, float]:
    """The video's frame count and average frame rate."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        rate = float(stream.average_rate or 1)
        if stream.frames > 0:
            return int(stream.frames), rate
        return sum(1 for packet in container.demux(stream) if packet.size), rate


def _decode_at(path, indices: list[int]) -> tuple[list[np.ndarray], list[float], int, float]:
    """The frames at these indices (in order; a repeated index gives its frame again) with their times, how
    many frames were decoded (all of them when the video ends before the last index, else up to that index),
    and the stream's average frame rate. An index past the video's end gives nothing."""
    import av

    wanted = set(indices)
    last = max(indices) if indices else -1
    found, decoded = {}, 0
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        rate = float(stream.average_rate or 1)
        for i, frame in enumerate(container.decode(stream)):
            decoded = i + 1
            if i in wanted:
                found[i] = (frame.to_ndarray(format="rgb24"), float(frame.time) if frame.time is not None else i / rate)
            if i >= last >= 0:
                break
    picked = [found[i] for i in indices if i in found]  # every rule's indices are non-decreasing
    return [f for f, _ in picked], [t for _, t in picked], decoded, rate
