"""The speed benchmark runs (on a tiny preset) and reports what it should."""

import importlib.util
import sys
from pathlib import Path

spec = importlib.util.spec_from_file_location("speed", Path(__file__).resolve().parents[1] / "bench" / "speed.py")
speed = importlib.util.module_from_spec(spec)
spec.loader.exec_module(speed)


def test_speed_bench_tiny(tmp_path, capsys):
    rows = speed.main(["--preset", "tiny", "--steps", "20", "--guidance", "5", "--json", str(tmp_path / "r.json")])
    assert [r["method"] for r in rows] == ["reference", "hsa 0.5", "hsa 0.25"]
    for row in rows[1:]:
        assert abs(row["achieved"] - row["budget"]) <= 0.03 * row["budget"]
    assert "| reference |" in capsys.readouterr().out and (tmp_path / "r.json").exists()


fid_spec = importlib.util.spec_from_file_location("fidelity", Path(__file__).resolve().parents[1] / "bench" / "fidelity.py")
fidelity = importlib.util.module_from_spec(fid_spec)
sys.modules["fidelity"] = fidelity  # its dataclasses look their module up there
fid_spec.loader.exec_module(fidelity)


def test_fidelity_metrics_on_known_inputs():
    import torch

    from bench.fidelity_metrics import latent_mse, psnr, ssim

    video = torch.rand(3, 32, 32, 3, generator=torch.Generator().manual_seed(0))
    assert psnr(video, video) == float("inf") and abs(ssim(video, video) - 1.0) < 1e-12
    assert abs(psnr(video.clamp(0, 0.9), video.clamp(0, 0.9) + 0.1) - 20.0) < 1e-4  # mse 0.01 -> 20 dB
    assert ssim(video, torch.rand_like(video)) < 0.2 and abs(latent_mse(video, video + 0.5) - 0.25) < 1e-6


def test_fidelity_bench_quick(tmp_path):
    rows = fidelity.main(["--out", str(tmp_path), "--quick", "--prompts", "1", "--report-prompts", "1"])
    by_name = {r["method"]: r for r in rows}
    assert list(by_name)[:5] == ["reference", "hsa 0.75", "hsa 0.5", "hsa 0.35", "hsa 0.25"]
    # the reference is deterministic: rendered again, it is bitwise the same
    assert by_name["reference (again)"]["latent_mse"] == 0 and by_name["reference"]["psnr"] == float("inf")
    for name in ("hsa 0.5", "uniform 20 steps"):
        assert 15 < by_name[name]["psnr"] < 80 and by_name[name]["measured_fraction"] > 0  # timing: no bound
    assert abs(by_name["hsa 0.25"]["counted_fraction"] - 0.25) < 0.01
    assert abs(by_name["hsa 0.25"]["compute_fraction"] - 0.25) < 0.01  # the FFN count agrees with HSA's own
    assert abs(by_name["uniform 20 steps"]["compute_fraction"] - 0.5) < 1e-9
    page = (tmp_path / "report.html").read_text()
    assert page.count("<video") == len(rows) - 1  # every method but the repeated reference
    for row in rows[:-1]:
        assert (tmp_path / "videos" / f"{fidelity._slug(row['method'])}-0.mp4").stat().st_size > 0
    assert (tmp_path / "pareto.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "results.csv").read_text().startswith("method,family")
    assert "| hsa 0.5 |" in (tmp_path / "summary.md").read_text()


def test_uniform_psnr_is_interpolated_at_equal_runtime():
    from bench.fidelity_report import uniform_psnr_at

    rows = [{"family": "uniform", "measured_fraction": 0.5, "psnr": 40.0},
            {"family": "uniform", "measured_fraction": 0.25, "psnr": 30.0},
            {"family": "hsa", "measured_fraction": 0.3, "psnr": 99.0}]
    assert uniform_psnr_at(rows, 0.375) == 35.0 and uniform_psnr_at(rows, 0.25) == 30.0
    assert uniform_psnr_at(rows, 0.2) is None and uniform_psnr_at(rows, 0.6) is None
