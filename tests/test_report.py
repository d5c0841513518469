"""`prep report`: the page about a finished run, from a hand-made manifest and routing table.

The fixture's numbers are chosen by hand, so every expected value here is computed
from the fixture, not from prep.tools.report.
"""

from __future__ import annotations

import json
import re
import shutil
import struct
import subprocess
import xml.etree.ElementTree as ET
import zlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import typer
from typer.testing import CliRunner

from prep.errors import UserError
from prep.tools.report import build_report, report_command, report_numbers, write_report

SVG = "{http://www.w3.org/2000/svg}"
EVIL_PATH = '/tmp/<b>tok</b> & "quoted".json'
EVIL_REASON = "<script>alert(1)</script>"
EVIL_ROUTER = "p2c<i>"
EVIL_INPUT = "in/<img src=x onerror=alert(2)>.jsonl"
WALL = 2.5

# (seq, worker, attempt, bytes, queued_at, started_at, finished_at): three workers, one retry.
TASKS = [
    (0, 0, 0, 200_000, 0.10, 0.10, 0.60), (1, 1, 0, 250_000, 0.10, 0.12, 0.70),
    (2, 2, 0, 150_000, 0.11, 0.13, 0.50), (3, 0, 0, 220_000, 0.15, 0.60, 1.10),
    (4, 2, 0, 180_000, 0.16, 0.50, 0.95), (5, 1, 1, 300_000, 0.80, 0.85, 1.55),
    (6, 0, 0, 230_000, 0.60, 1.10, 1.60), (7, 2, 0, 170_000, 0.70, 0.95, 1.40),
    (8, 0, 0, 100_000, 1.20, 1.60, 1.85), (9, 1, 0, 200_000, 1.30, 1.55, 2.05),
    (10, 2, 0, 250_000, 1.40, 1.40, 1.95), (11, 2, 0, 250_000, 1.90, 1.95, 2.40),
]


def worker_bytes() -> list[int]:
    return [sum(t[3] for t in TASKS if t[1] == j) for j in range(3)]


def make_manifest() -> dict:
    loads = worker_bytes()
    busy = [sum(t[6] - t[5] for t in TASKS if t[1] == j) for j in range(3)]
    return {
        "version": 1,
        "config": {"router": EVIL_ROUTER, "note": "</pre><script>x()</script>"},
        "tokenizer": {"path": EVIL_PATH, "sha256": "ab" * 32, "vocab_size": 50257, "backend": "tiktoken",
                      "backend_reason": EVIL_REASON,
                      "verification": {"ok": True, "documents": 321, "differing": 0, "first_difference": None,
                                       "seconds": 0.25}},
        "inputs": [{"path": EVIL_INPUT, "format": "jsonl", "bytes": 2_600_000}],
        "counts": {"documents_in": 1234, "documents_out": 1200, "quarantined": 4, "filtered": 30,
                   "tokens": 456_789, "bytes_in": 2_500_000},
        "shards": [{"file": "part-00000.parquet", "rows": 1200, "tokens": 456_789, "sha256": "cd" * 32,
                    "bytes": 987_654, "first_seq": 0, "last_seq": 11}],
        "routing": {
            "router": EVIL_ROUTER, "seed": 7, "decisions": 12, "tasks": 12, "imbalance": 1.0833, "cv": 0.0589,
            "expected_imbalance_uniform": 1.4167,
            "workers": [{"worker": j, "chunks": sum(t[1] == j for t in TASKS), "bytes": loads[j],
                         "documents": 400, "tokens": 150_000 + j, "busy_s": round(busy[j], 4),
                         "idle_s": round(WALL - busy[j], 4), "queue_wait_s": 0.5, "tokenize_s": busy[j] * 0.6,
                         "features_s": busy[j] * 0.2, "transport_s": busy[j] * 0.05, "restarts": int(j == 1)}
                        for j in range(3)],
        },
        "timings": {"wall_s": WALL},
    }


def write_run(out: Path, routing: bool = True) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    (out / "_manifest.json").write_text(json.dumps(make_manifest()), encoding="utf-8")
    if routing:
        cols = list(zip(*TASKS, strict=True))
        pq.write_table(pa.table({
            "seq": pa.array(cols[0], pa.int64()), "start": pa.array([0] * len(TASKS), pa.int64()),
            "stop": pa.array([100] * len(TASKS), pa.int64()), "attempt": pa.array(cols[2], pa.int64()),
            "worker": pa.array(cols[1], pa.int64()), "bytes": pa.array(cols[3], pa.int64()),
            "queued_at": cols[4], "started_at": cols[5], "finished_at": cols[6],
        }), out / "_routing.parquet")
    return out


def svgs(page: str) -> dict[str, ET.Element]:
    """Every inline SVG, parsed as XML (so it is well-formed), by id."""
    return {el.get("id"): el for el in (ET.fromstring(s) for s in re.findall(r"<svg\b.*?</svg>", page, re.S))}


def rects(svg: ET.Element, cls: str) -> list[ET.Element]:
    return [r for r in svg.iter(f"{SVG}rect") if r.get("class") == cls]


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    return write_run(tmp_path / "out")


def test_summary_numbers_appear(run_dir: Path) -> None:
    page = build_report(run_dir)
    for text in ("1,234", "1,200", "456,789", "2.5 MB", "2.50 s", "50,257 ids", "tiktoken",
                 f"{2_500_000 / WALL / 1e6:,.2f} MB/s", f"{1234 / WALL:,.0f}", f"{456_789 / WALL:,.0f}",
                 "1.0833", "0.0589", "1.4167", "part-00000.parquet", "987.7 kB",
                 "documents in = written + quarantined + filtered (1,234)"):
        assert text in page, text
    for label, value in (("quarantined", 4), ("filtered", 30)):
        assert f'class="k">{label}</div><div class="v">{value}</div>' in page


def test_one_svg_per_chart(run_dir: Path) -> None:
    charts = svgs(build_report(run_dir))
    assert sorted(charts) == sorted(["chart-worker-bytes", "chart-worker-time", "chart-timeline",
                                     "chart-queue-wait", "chart-imbalance"])
    assert all(svg.find(f"{SVG}title").text for svg in charts.values())  # every chart says what it is


def test_worker_bars_are_proportional(run_dir: Path) -> None:
    charts = svgs(build_report(run_dir))
    widths = np.array([float(r.get("width")) for r in rects(charts["chart-worker-bytes"], "bar")])
    loads = np.array(worker_bytes(), dtype=float)
    np.testing.assert_allclose(widths / widths.max(), loads / loads.max(), atol=0.002)
    segs = rects(charts["chart-worker-time"], "seg")
    n = 7  # parse, filter, tokenize, features, transport, other busy, idle
    assert len(segs) == 3 * n
    totals = np.array([sum(float(r.get("width")) for r in segs[n * j:n * j + n]) for j in range(3)])
    np.testing.assert_allclose(totals, totals[0], atol=0.05)  # busy + idle = the same wall time for each


def test_timeline_has_one_rectangle_per_task(run_dir: Path) -> None:
    chart = svgs(build_report(run_dir))["chart-timeline"]
    tasks = rects(chart, "task")
    assert len(tasks) == len(TASKS)
    assert sum(r.get("fill") == "#e4572e" for r in tasks) == sum(t[2] > 0 for t in TASKS)
    xs = np.array([float(r.get("x")) for r in tasks])
    ends = xs + np.array([float(r.get("width")) for r in tasks])
    started, finished = np.array([t[5] for t in TASKS]), np.array([t[6] for t in TASKS])
    scale = (ends - xs) / (finished - started)  # pixels per second: the same for every task
    np.testing.assert_allclose(scale, scale[0], rtol=0.01)
    np.testing.assert_allclose(xs - started * scale[0], xs[0] - started[0] * scale[0], atol=0.05)
    rows = {float(r.get("y")) for r in tasks}
    assert len(rows) == 3


def test_queue_wait_histogram(run_dir: Path) -> None:
    page = build_report(run_dir)
    chart = svgs(page)["chart-queue-wait"]
    waits = np.array([t[5] - t[4] for t in TASKS])
    assert sum(int(r.get("data-count")) for r in rects(chart, "bin")) == len(TASKS)
    assert f"median {np.median(waits) * 1e3:.3g} ms" in "".join(chart.itertext())
    assert f"{np.percentile(waits, 95) * 1e3:,.1f} ms" in page
    assert "queue wait: started_at - queued_at (ms)" in "".join(chart.itertext())


def test_strings_are_escaped(run_dir: Path) -> None:
    page = build_report(run_dir)
    for raw in ("<script", "<b>", "<i>", "<img", "</pre><script>"):
        assert raw not in page, raw
    for escaped in ("&lt;script&gt;alert(1)&lt;/script&gt;", "p2c&lt;i&gt;",
                    "&lt;img src=x onerror=alert(2)&gt;", "&lt;b&gt;tok&lt;/b&gt; &amp; &quot;quoted&quot;"):
        assert escaped in page, escaped


def test_self_contained(run_dir: Path) -> None:
    page = build_report(run_dir)
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", page)
    assert "@import" not in page and "url(" not in page and "<script" not in page
    assert page.startswith("<!doctype html>")


def test_run_without_routing_table(tmp_path: Path) -> None:
    out = write_run(tmp_path / "out", routing=False)
    page = build_report(out)
    assert "This run has no _routing.parquet" in page
    assert sorted(svgs(page)) == ["chart-imbalance", "chart-worker-bytes", "chart-worker-time"]
    assert not any(line.startswith("queue wait") for line in report_numbers(out))


def test_missing_inputs_are_user_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no output directory"):
        build_report(tmp_path / "nowhere")
    with pytest.raises(UserError, match="no _manifest.json"):
        build_report(tmp_path)
    (tmp_path / "_journal.jsonl").write_text("{}\n")
    with pytest.raises(UserError, match="unfinished run") as exc:
        write_report(tmp_path)
    assert "\n" not in str(exc.value)
    (tmp_path / "_manifest.json").write_text("{not json")
    with pytest.raises(UserError, match="cannot read"):
        report_numbers(tmp_path)
    assert not (tmp_path / "report.html").exists()


def test_write_report_is_atomic_and_complete(run_dir: Path) -> None:
    path = write_report(run_dir)
    assert path == run_dir / "report.html"
    assert path.read_text(encoding="utf-8") == build_report(run_dir)
    assert not list(run_dir.glob(".*.tmp"))


def test_report_numbers(run_dir: Path) -> None:
    lines = report_numbers(run_dir)
    assert lines[0] == "documents      1,234 in, 1,200 written, 4 quarantined, 30 filtered"
    assert lines[2] == (f"text           2.5 MB in 2.50 s: 1.00 MB/s, {1234 / WALL:,.0f} docs/s, "
                        f"{456_789 / WALL:,.0f} tokens/s")
    assert lines[4].endswith(f"{EVIL_ROUTER} (seed 7), 3 workers: imbalance 1.083, cv 0.059, "
                             "uniform random expects 1.417")
    waits = np.array([t[5] - t[4] for t in TASKS])
    assert lines[5] == (f"queue wait     median {np.median(waits) * 1e3:,.1f} ms, "
                        f"p95 {np.percentile(waits, 95) * 1e3:,.1f} ms, max {waits.max() * 1e3:,.1f} ms")


def test_report_command(run_dir: Path, tmp_path: Path) -> None:
    app = typer.Typer()
    app.command()(report_command)
    result = CliRunner().invoke(app, [str(run_dir)])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-1] == f"report         {run_dir / 'report.html'}"
    assert "1,234 in" in result.output
    assert (run_dir / "report.html").exists()
    assert isinstance(CliRunner().invoke(app, [str(tmp_path / "nowhere")]).exception, UserError)


# ------------------------------------------------------------------ in a real browser
def chromium() -> str | None:
    return next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)


def png_pixels(path: Path) -> tuple[int, int, bytes]:
    """(width, height, filtered scanline bytes) of a PNG, with zlib only."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, size = 8, b"", (0, 0)
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            size = struct.unpack(">II", body[:8])
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    return size[0], size[1], zlib.decompress(idat)


@pytest.mark.slow
def test_page_renders_in_headless_chromium(run_dir: Path, tmp_path: Path) -> None:
    browser = chromium()
    if browser is None:
        pytest.skip("no chromium binary found (apt-get install -y chromium)")
    page = write_report(run_dir)
    flags = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}"]
    shot = tmp_path / "shot.png"
    subprocess.run([*flags, f"--screenshot={shot}", "--window-size=1200,2000", page.as_uri()],
                   capture_output=True, timeout=120, check=True)
    width, height, raw = png_pixels(shot)
    assert (width, height) == (1200, 2000)
    assert shot.stat().st_size > 20_000 and len(set(raw[::7])) > 50  # drawn, not a blank page
    dom = subprocess.run([*flags, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120,
                         check=True).stdout
    for chart in ("chart-worker-bytes", "chart-worker-time", "chart-timeline", "chart-queue-wait",
                  "chart-imbalance"):
        assert f'id="{chart}"' in dom, chart
    assert dom.count("<svg") == 5 and dom.count('class="task"') == len(TASKS)
