"""The README's main command, end to end in a subprocess."""

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import _free_port

from pipeline.video_io import read_mp4

ROOT = Path(__file__).resolve().parents[1]


def _cli(*args):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "jobs", *args], capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)


def test_render_default_model_writes_mp4(tmp_path):
    out = tmp_path / "demo.mp4"
    proc = _cli("render", "--prompt", "a red circle moves left over grass", "--budget", "0.5", "--steps", "20",
                "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    stats = json.loads(proc.stdout)
    assert stats["output"] == str(out) and stats["budget"] == 0.5
    assert abs(stats["achieved_fraction"] - 0.5) <= 0.03 * 0.5
    frames, fps = read_mp4(out)
    assert frames.shape == (17, 64, 64, 3) and fps == 8


def test_render_local_model_and_bad_field(tmp_path, tiny_dirs):
    proc = _cli("render", "--model", str(tiny_dirs("i2v")), "--prompt", "x", "--height", "64", "--width", "64",
                "--num-frames", "9", "--out", str(tmp_path / "v.mp4"))
    assert proc.returncode == 2
    assert "image:" in proc.stderr and "first frame" in proc.stderr
    assert not (tmp_path / "v.mp4").exists()


def test_render_two_ranks_under_torchrun(tmp_path, tiny_dirs):
    out = tmp_path / "p2.mp4"
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(_free_port()),
         "-m", "jobs", "render", "--model", str(tiny_dirs("t2v")), "--prompt", "a red circle moves left",
         "--height", "64", "--width", "64", "--num-frames", "9", "--steps", "10", "--ulysses", "2", "--out", str(out)],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    stats = json.loads(proc.stdout[proc.stdout.index("{"):])
    assert stats["output"] == str(out) and read_mp4(out)[0].shape == (9, 64, 64, 3)


def test_parallel_flags_without_torchrun_say_how(tmp_path):
    proc = _cli("render", "--prompt", "x", "--ulysses", "2", "--out", str(tmp_path / "v.mp4"))
    assert proc.returncode != 0 and "torchrun --nproc-per-node 2" in proc.stderr
