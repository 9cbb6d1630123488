"""benchmarks/scale.py end to end on 20 phantoms (two steps an epoch at batch 16): every cell runs in its own
process, the tables are written, marked PARTIAL until every cell asked for is there, and a second invocation
resumes instead of measuring again."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCALE = ROOT / "benchmarks" / "scale.py"


def _run(*args: str) -> str:
    done = subprocess.run([sys.executable, str(SCALE), *args], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_scale_runs_cell_by_cell_and_resumes(tmp_path):
    common = ["--scratch", str(tmp_path / "scratch"), "--sizes", "32", "--n", "20", "--steps", "3",
              "--results", str(tmp_path / "results")]
    _run(*common, "--kinds", "build", "train", "--build-workers", "2")
    doc = json.loads((tmp_path / "results" / "scale.json").read_text())
    assert set(doc["cells"]) == {"32 px | N=20 | build", "32 px | N=20 | train"} and not doc["missing"]
    train = doc["cells"]["32 px | N=20 | train"]
    assert train["steps"] == 3 and train["cache_reused"] and train["ms_per_image_step"] > 0
    assert train["peak_rss_mb"] > 50 and doc["cells"]["32 px | N=20 | build"]["pairs_per_s"] > 0
    assert doc["cells"]["32 px | N=20 | build"]["workers"] == 2
    out = _run(*common)  # all kinds: the two done are kept, the other three measured
    assert "measuring 32 px | N=20 | build" not in out and "measuring 32 px | N=20 | export" in out
    doc = json.loads((tmp_path / "results" / "scale.json").read_text())
    assert doc["cells"]["32 px | N=20 | train"] == train
    assert doc["cells"]["32 px | N=20 | review"]["rows"] == 20
    assert doc["cells"]["32 px | N=20 | score"]["images_per_s"] > 0
    md = (tmp_path / "results" / "scale.md").read_text()
    assert "# Scale (complete)" in md and "| 32 | 20 |" in md
    out = _run(*common, "--n", "20", "40", "--summary-only")  # a wider command: only the table is rewritten
    assert "measuring" not in out and "PARTIAL: 5 cells missing" in out
    wider = json.loads((tmp_path / "results" / "scale.json").read_text())
    assert wider["cells"] == doc["cells"] and "--summary-only" not in wider["command"]
    partial = _scale().markdown(doc | {"missing": ["32 px | N=21 | build"]})  # a run stopped before its end
    assert "PARTIAL: 1 cells missing" in partial and f"resume with `{doc['command']}`" in partial
    out = _run(*common, "--only", "train", "--repeats", "2", "--threads", "1")  # the timing cell, again, twice
    assert out.count("repeating 32 px | N=20 | train") == 1
    train = json.loads((tmp_path / "results" / "scale.json").read_text())["cells"]["32 px | N=20 | train"]
    runs = train["repeats_ms_per_image_step"]
    assert len(runs) == 2 and train["ms_per_image_step"] == min(runs) and train["torch_threads"] == 1
    assert f"(1 torch thread; runs {runs[0]} / {runs[1]})" in (tmp_path / "results" / "scale.md").read_text()


def _scale():
    import importlib.util

    spec = importlib.util.spec_from_file_location("scale", SCALE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_a_data_set_of_few_drawn_phantoms_links_each_under_its_own_ids(tmp_path):
    """--distinct K: only K phantoms are drawn; case i is phantom i mod K (a hard link) under its own id."""
    import os
    import sys

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from scale_data import case_id, data_set

    data = data_set(tmp_path, 16, 7, log=lambda *_: None, distinct=3)
    assert data.name == "n7-16-of3" and len(list((tmp_path / "src16" / "images").iterdir())) == 3
    for sub in ("images", "masks"):
        files = sorted((data / sub).iterdir())
        assert [f.name for f in files] == [f"{case_id(i)}.png" for i in range(7)]
        assert [os.stat(f).st_ino for f in files] == [os.stat(files[i % 3]).st_ino for i in range(7)]
    assert data_set(tmp_path, 16, 3, distinct=3).name == "n3-16"  # every case drawn: the plain name
