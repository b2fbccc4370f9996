"""mp4 in and out through imageio-ffmpeg's bundled ffmpeg (h264, yuv420p)."""

from __future__ import annotations

import os
from pathlib import Path

import imageio_ffmpeg
import numpy as np


def to_uint8(frames: np.ndarray) -> np.ndarray:
    """Float frames in [0, 1] (or uint8) -> uint8 [F, H, W, 3]."""
    if frames.dtype == np.uint8:
        return frames
    return (np.clip(frames, 0.0, 1.0) * 255.0).round().astype(np.uint8)


def write_mp4(frames: np.ndarray, path: str | os.PathLike, fps: int) -> Path:
    """Write [F, H, W, 3] frames as h264/yuv420p at ``fps``; atomic (a crash leaves no partial file)."""
    frames = to_uint8(np.asarray(frames))
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be [F, H, W, 3], got {frames.shape}")
    _, height, width, _ = frames.shape
    if height % 2 or width % 2:
        raise ValueError(f"yuv420p needs even frame sizes, got {height}x{width}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.stem}.partial.mp4")
    writer = imageio_ffmpeg.write_frames(
        str(partial), (width, height), fps=fps, codec="libx264", pix_fmt_out="yuv420p",
        macro_block_size=1, output_params=["-crf", "18"], ffmpeg_log_level="error",
    )
    writer.send(None)
    for frame in frames:
        writer.send(np.ascontiguousarray(frame))
    writer.close()
    os.replace(partial, path)
    return path


def read_mp4(path: str | os.PathLike) -> tuple[np.ndarray, float]:
    """Decode an mp4 to uint8 [F, H, W, 3] and its frame rate."""
    reader = imageio_ffmpeg.read_frames(str(path))
    meta = next(reader)
    width, height = meta["size"]
    frames = [np.frombuffer(buf, dtype=np.uint8).reshape(height, width, 3) for buf in reader]
    return np.stack(frames), float(meta["fps"])
