"""The speed benchmark runs (on a tiny preset) and reports what it should."""

import importlib.util
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
