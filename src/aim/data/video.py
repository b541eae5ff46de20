"""Video decoding with PyAV and uniform frame sampling. Errors surface as VideoDecodeError, per video."""
from __future__ import annotations

from pathlib import Path

import numpy as np


class VideoDecodeError(RuntimeError):
    """A video that cannot be opened or decoded; the evaluation records the sample as skipped."""


def uniform_frame_indices(total_frames: int, num_frames: int) -> list[int]:
    """Indices of num_frames frames spread uniformly over the video (the centre of each of num_frames
    equal segments). With fewer frames than asked, every frame is used once."""
    if total_frames < 1:
        raise ValueError("a video needs at least one frame")
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if num_frames >= total_frames:
        return list(range(total_frames))
    edges = np.linspace(0, total_frames, num_frames + 1)
    return [int(i) for i in np.floor((edges[:-1] + edges[1:]) / 2)]


def decode_frames(path: str | Path, num_frames: int) -> np.ndarray:
    """Decode a video and return num_frames uniformly sampled RGB frames as uint8 [T, H, W, 3]."""
    return decode_frames_with_times(path, num_frames)[0]


def decode_frames_with_times(path: str | Path, num_frames: int) -> tuple[np.ndarray, list[float]]:
    """num_frames uniformly sampled RGB frames, uint8 [T, H, W, 3], and each one's time in seconds.

    Only the sampled frames are converted to RGB (a benchmark video can be an hour long), so the frame
    count comes first: from the container's metadata, else by counting packets. Should fewer frames
    decode than the metadata promised, the sampling is redone over the frames that do decode.
    """
    import av

    try:
        total = _frame_count(path)
        frames, times, decoded = _decode_at(path, uniform_frame_indices(total, num_frames) if total else [])
        if decoded and len(frames) < min(num_frames, decoded):
            frames, times, _ = _decode_at(path, uniform_frame_indices(decoded, num_frames))
    except (av.FFmpegError, OSError, IndexError, ValueError) as exc:
        raise VideoDecodeError(f"cannot decode {path}: {exc}") from exc
    if not frames:
        raise VideoDecodeError(f"cannot decode {path}: no video frames")
    return np.stack(frames), times


def _frame_count(path) -> int:
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        if stream.frames > 0:
            return int(stream.frames)
        return sum(1 for packet in container.demux(stream) if packet.size)


def _decode_at(path, indices: list[int]) -> tuple[list[np.ndarray], list[float], int]:
    """The frames at these indices (in decoding order) with their times, and how many frames were
    decoded: all of them when the video ends before the last index, else up to that index."""
    import av

    wanted = set(indices)
    last = max(indices) if indices else -1
    frames, times, decoded = [], [], 0
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        rate = float(stream.average_rate or 1)
        for i, frame in enumerate(container.decode(stream)):
            decoded = i + 1
            if i in wanted:
                frames.append(frame.to_ndarray(format="rgb24"))
                times.append(float(frame.time) if frame.time is not None else i / rate)
            if i >= last >= 0:
                break
    return frames, times, decoded
