import subprocess

import imageio_ffmpeg
import numpy as np
import pytest

from pipeline.video_io import read_mp4, write_mp4


def test_mp4_roundtrip_h264_yuv420p_at_fps(tmp_path):
    frames = np.zeros((9, 32, 48, 3), dtype=np.float32)
    frames[:, :, :24] = [1.0, 0.0, 0.0]
    frames[:, :, 24:] = np.linspace(0, 1, 9)[:, None, None, None]
    path = write_mp4(frames, tmp_path / "sub" / "v.mp4", fps=12)
    decoded, fps = read_mp4(path)
    assert decoded.shape == (9, 32, 48, 3) and fps == 12
    assert np.abs(decoded.astype(int) - (frames * 255).round().astype(int)).mean() < 3
    probe = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-i", str(path)], capture_output=True, text=True).stderr
    assert "h264" in probe and "yuv420p" in probe
    assert not list(tmp_path.glob("sub/.*partial*"))


def test_odd_sizes_are_refused(tmp_path):
    with pytest.raises(ValueError, match="even"):
        write_mp4(np.zeros((2, 31, 32, 3), np.uint8), tmp_path / "v.mp4", fps=8)
