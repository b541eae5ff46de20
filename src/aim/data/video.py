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
    import av

    try:
        with av.open(str(path)) as container:
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    except (av.FFmpegError, OSError, IndexError, ValueError) as exc:
        raise VideoDecodeError(f"cannot decode {path}: {exc}") from exc
    if not frames:
        raise VideoDecodeError(f"cannot decode {path}: no video frames")
    return np.stack([frames[i] for i in uniform_frame_indices(len(frames), num_frames)])
