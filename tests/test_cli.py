"""The README's main command, end to end in a subprocess."""

import json
import os
import subprocess
import sys
from pathlib import Path

from pipeline.video_io import read_mp4

ROOT = Path(__file__).resolve().parents[1]


def _cli(*args, cache):
    env = dict(os.environ, HSA_CACHE=str(cache), PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "jobs", *args], capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)


def test_render_default_model_writes_mp4(tmp_path):
    out = tmp_path / "demo.mp4"
    proc = _cli("render", "--prompt", "a red circle moves left over grass", "--budget", "0.5", "--steps", "20",
                "--out", str(out), cache=tmp_path / "cache")
    assert proc.returncode == 0, proc.stderr
    stats = json.loads(proc.stdout)
    assert stats["output"] == str(out) and stats["budget"] == 0.5
    assert abs(stats["achieved_fraction"] - 0.5) <= 0.03 * 0.5
    frames, fps = read_mp4(out)
    assert frames.shape == (17, 128, 128, 3) and fps == 16
    assert (tmp_path / "cache" / "tiny-wan-t2v" / "model_index.json").exists()


def test_render_local_model_and_bad_field(tmp_path, tiny_dirs):
    proc = _cli("render", "--model", str(tiny_dirs("i2v")), "--prompt", "x", "--height", "64", "--width", "64",
                "--num-frames", "9", "--out", str(tmp_path / "v.mp4"), cache=tmp_path)
    assert proc.returncode == 2
    assert "image:" in proc.stderr and "first frame" in proc.stderr
    assert not (tmp_path / "v.mp4").exists()
