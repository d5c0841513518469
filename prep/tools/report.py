"""`prep report OUT`: one self-contained HTML page about a finished run.

The terminal summary says *what* a run did; this page shows *how* the work spread
over workers and time (load per worker, busy and idle time, the task timeline, queue
waits, balance against uniform random routing), so that a straggler or a routing
problem is seen at a glance. CSS and SVG charts are inline and there is no script,
so the page opens offline and can be archived beside the shards.
"""

from __future__ import annotations

import json
from html import escape
from pathlib import Path
from typing import Annotated

import numpy as np
import pyarrow.parquet as pq
import typer

from prep.errors import UserError
from prep.io.writer import JOURNAL, MANIFEST, ROUTING, write_atomic

REPORT = "report.html"

# Chart geometry, in SVG user units (the SVG scales to the page width).
WIDTH, LEFT, RIGHT, TOP, BOTTOM = 1000, 110, 40, 14, 50
PLOT_W = WIDTH - LEFT - RIGHT
ROW_H = 24
BLUE, LIGHT_BLUE, ORANGE, GREY = "#3b6fb6", "#8fb3e3", "#e4572e", "#d9d9d9"
PHASES = (  # parts of a worker's life, in bar order: (key in the manifest's workers, label, colour)
    ("parse_s", "parse", "#c77c5a"),
    ("filter_s", "filter", "#b5b84d"),
    ("tokenize_s", "tokenize", BLUE),
    ("features_s", "features", "#5fa8a0"),
    ("transport_s", "transport", "#e0a030"),
    ("", "other busy", "#a58bc4"),  # busy_s minus the named parts above
    ("idle_s", "idle", GREY),
)
MAX_HIST_BINS = 40
SHOWN_SHARDS = 20

CSS = """
body{margin:0;background:#f6f7f9;color:#222;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,
 "Helvetica Neue",Arial,sans-serif}
main{max-width:1100px;margin:0 auto;padding:24px 28px 48px}
h1{font-size:26px;margin:0 0 2px}h2{font-size:19px;margin:30px 0 10px;border-bottom:1px solid #ddd;
 padding-bottom:4px}h3{font-size:15px;margin:18px 0 6px;color:#333}
.sub{color:#666;margin:0;word-break:break-all}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(160px,1fr));gap:10px}
.card{background:#fff;border:1px solid #e2e4e8;border-radius:8px;padding:10px 12px}
.card .k{color:#666;font-size:12px;text-transform:uppercase;letter-spacing:.04em}
.card .v{font-size:21px;font-weight:600;font-variant-numeric:tabular-nums}
.card .u{color:#666;font-size:12px}
.ok{color:#1d7a36}.bad{color:#b3261e;font-weight:600}
.chart{display:block;width:100%;height:auto;background:#fff;border:1px solid #e2e4e8;border-radius:8px;
 fill:#333}
.chart text{font-family:inherit;font-size:12px}.chart .axis-title{font-size:13px;fill:#555}
.chart .mark{paint-order:stroke;stroke:#fff;stroke-width:3px}
.legend{margin:0 0 6px;color:#444;font-size:13px}
.legend span{display:inline-block;margin-right:16px}
.legend i{display:inline-block;width:12px;height:12px;border-radius:2px;margin-right:5px;vertical-align:-1px}
table{border-collapse:collapse;background:#fff;margin:6px 0;font-variant-numeric:tabular-nums}
th,td{border:1px solid #e2e4e8;padding:4px 9px;text-align:right}
th{background:#f0f2f5;font-weight:600}td.l,th.l{text-align:left}
.note{background:#fff8e1;border:1px solid #f1d98a;border-radius:6px;padding:8px 12px}
pre{background:#fff;border:1px solid #e2e4e8;border-radius:6px;padding:10px;overflow:auto;font-size:12px}
"""


# ------------------------------------------------------------------ loading
def _load(out: Path) -> tuple[dict, dict[str, np.ndarray] | None]:
    """The manifest and, when the run wrote one, the routing table as numpy columns."""
    if not out.is_dir():
        raise UserError(f"no output directory {out}")
    path = out / MANIFEST
    if not path.exists():
        if (out / JOURNAL).exists():
            raise UserError(f"{out} is an unfinished run (no {MANIFEST}); "
                            "finish it with prep run ... --resume")
        raise UserError(f"no {MANIFEST} in {out}: not an output directory of prep run")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read {path}: {exc}") from None
    routing_path = out / ROUTING
    if not routing_path.exists():
        return manifest, None
    table = pq.read_table(routing_path)
    return manifest, {name: table.column(name).to_numpy() for name in table.column_names}


# --------------------------------------------------------------- formatting
def _scale(largest: float, units: tuple[tuple[float, str], ...]) -> tuple[float, str]:
    """The largest unit (divisor, name) that keeps `largest` at or above 1, so axes read naturally."""
    for divisor, name in reversed(units):
        if largest >= divisor:
            return divisor, name
    return units[0]


BYTE_UNITS = ((1.0, "B"), (1e3, "kB"), (1e6, "MB"), (1e9, "GB"))
TIME_UNITS = ((1e-3, "ms"), (1.0, "s"))


def _bytes(n: float) -> str:
    divisor, unit = _scale(n, BYTE_UNITS)
    return f"{n / divisor:,.{0 if unit == 'B' else 1}f} {unit}"


def _seconds(s: float) -> str:
    return f"{s * 1e3:,.1f} ms" if s < 1 else f"{s:,.2f} s"


def _ticks(high: float, n: int = 6, whole: bool = False) -> np.ndarray:
    """Round tick values from 0 up to at least `high`: steps of 1, 2 or 5 times a power of ten
    (at least 1 when the values are `whole` counts)."""
    high = high if high > 0 else 1.0
    raw = max(high / n, 1.0 if whole else 0.0)
    magnitude = 10 ** np.floor(np.log10(raw))
    step = magnitude * next(m for m in (1, 2, 5, 10) if m * magnitude >= raw * (1 - 1e-9))
    return np.arange(int(np.ceil(high / step - 1e-9)) + 1) * step


def _tick_label(v: float) -> str:
    return f"{v:,.6g}"


# --------------------------------------------------------------------- SVG
def _el(tag: str, children: str | None = None, **attrs: object) -> str:
    """One element. Attribute names use _ for - (a trailing _ is dropped: class_); values are escaped,
    floats rounded to 2 decimals. `children` is markup: pass text through escape() first."""
    attr = "".join(
        f' {k.rstrip("_").replace("_", "-")}="{escape(f"{v:.2f}" if isinstance(v, float) else str(v))}"'
        for k, v in attrs.items()
    )
    return f"<{tag}{attr}/>" if children is None else f"<{tag}{attr}>{children}</{tag}>"


def _text(text: str, x: float, y: float, **attrs: object) -> str:
    return _el("text", escape(text), x=float(x), y=float(y), **attrs)


def _tip(text: str) -> str:
    """A hover tooltip (SVG <title>): no script needed."""
    return _el("title", escape(text))


def _svg(chart_id: str, height: float, title: str, body: list[str]) -> str:
    return _el("svg", _el("title", escape(title), id=f"{chart_id}-title") + "".join(body), id=chart_id,
               class_="chart", xmlns="http://www.w3.org/2000/svg", role="img",
               viewBox=f"0 0 {WIDTH} {height:.0f}", aria_labelledby=f"{chart_id}-title")


def _x_axis(ticks: np.ndarray, y_top: float, y_bottom: float, title: str, offset: float = 0.0) -> list[str]:
    """Vertical grid lines from 0 to ticks[-1] with labels (value + offset) below, and the axis title."""
    parts = []
    for t in ticks:
        x = float(LEFT + t / ticks[-1] * PLOT_W)
        parts += [_el("line", x1=x, x2=x, y1=float(y_top), y2=float(y_bottom), stroke="#e6e6e6"),
                  _text(_tick_label(t + offset), x, y_bottom + 16, text_anchor="middle")]
    return parts + [
        _el("line", x1=LEFT, x2=LEFT + PLOT_W, y1=float(y_bottom), y2=float(y_bottom), stroke="#888"),
        _text(title, LEFT + PLOT_W / 2, y_bottom + 38, text_anchor="middle", class_="axis-title"),
    ]


def _row_labels(labels: list[str], row_h: float = ROW_H) -> list[str]:
    return [_text(label, LEFT - 8, TOP + i * row_h + row_h / 2 + 4, text_anchor="end")
            for i, label in enumerate(labels)]


def _legend(items: list[tuple[str, str]]) -> str:
    spans = "".join(_el("span", _el("i", "", style=f"background:{colour}") + escape(label))
                    for label, colour in items)
    return f'<p class="legend">{spans}</p>'


def _value_label(text: str, bar_width: float, y: float, inside_fill: str = "#fff") -> str:
    """A bar's value right of its end, or inside it when the bar leaves no room on the right."""
    if bar_width > PLOT_W - 80:
        return _text(text, LEFT + bar_width - 5, y, text_anchor="end", fill=inside_fill)
    return _text(text, LEFT + bar_width + 5, y)


def chart_worker_bytes(workers: list[dict]) -> str:
    """One bar per worker: text bytes routed to it, with the mean marked."""
    loads = np.array([w["bytes"] for w in workers], dtype=float)
    divisor, unit = _scale(loads.max(initial=0.0), BYTE_UNITS)
    ticks = _ticks(loads.max(initial=0.0) / divisor)
    y_bottom = TOP + len(workers) * ROW_H
    widths = loads / divisor / ticks[-1] * PLOT_W
    body = _x_axis(ticks, TOP, y_bottom, f"text bytes routed ({unit})")
    body += _row_labels([f"worker {w['worker']}" for w in workers])
    mean_x = float(LEFT + loads.mean() / divisor / ticks[-1] * PLOT_W)  # drawn first: behind the bars
    body.append(_el("line", _tip(f"mean {_bytes(loads.mean())}"), x1=mean_x, x2=mean_x, y1=TOP - 4,
                    y2=y_bottom, stroke="#222", stroke_dasharray="4 3"))
    for i, (w, width) in enumerate(zip(workers, widths, strict=True)):
        tip = _tip(f"worker {w['worker']}: {_bytes(w['bytes'])} in {w['chunks']:,} tasks")
        body += [_el("rect", tip, class_="bar", x=LEFT, y=TOP + i * ROW_H + 4, width=float(width),
                     height=ROW_H - 8, fill=BLUE),
                 _value_label(f"{w['bytes'] / divisor:,.3g} {unit}", width, TOP + i * ROW_H + ROW_H / 2 + 4)]
    return _svg("chart-worker-bytes", y_bottom + BOTTOM, "Text bytes routed per worker", body)


def worker_phases(workers: list[dict]) -> np.ndarray:
    """Seconds per worker (rows) in each part of PHASES (columns); other busy = busy minus named parts."""
    keys = [k for k, _, _ in PHASES if k not in ("", "idle_s")]
    named = np.array([[w.get(k, 0.0) for k in keys] for w in workers], dtype=float).reshape(-1, len(keys))
    busy = np.array([w["busy_s"] for w in workers], dtype=float)
    idle = np.array([w["idle_s"] for w in workers], dtype=float)
    return np.column_stack([named, np.clip(busy - named.sum(axis=1), 0, None), idle])


def chart_worker_time(workers: list[dict]) -> str:
    """One stacked bar per worker: busy time (split by phase) then idle time, in seconds."""
    phases = worker_phases(workers)
    ticks = _ticks(phases.sum(axis=1).max(initial=0.0))
    y_bottom = TOP + len(workers) * ROW_H
    xs = LEFT + (np.cumsum(phases, axis=1) - phases) / ticks[-1] * PLOT_W
    widths = phases / ticks[-1] * PLOT_W
    body = _x_axis(ticks, TOP, y_bottom, "time since the worker started (s)")
    body += _row_labels([f"worker {w['worker']}" for w in workers])
    body += [_el("rect", _tip(f"worker {w['worker']}: {label} {seconds:.3f} s"), class_="seg", x=float(x),
                 y=TOP + i * ROW_H + 4, width=float(width), height=ROW_H - 8, fill=colour)
             for i, w in enumerate(workers)
             for (_, label, colour), x, width, seconds in zip(PHASES, xs[i], widths[i], phases[i],
                                                               strict=True)]
    return _svg("chart-worker-time", y_bottom + BOTTOM, "Busy and idle time per worker", body)


def chart_timeline(routing: dict[str, np.ndarray], n_workers: int, wall_s: float) -> str:
    """One row per worker, one rectangle per task from its start to its finish.

    First attempts alternate two blues along each row so that neighbouring tasks stay
    distinct; tasks that succeeded only on a retry are orange.
    """
    worker = routing["worker"].astype(np.int64)
    started, finished = routing["started_at"].astype(float), routing["finished_at"].astype(float)
    ticks = _ticks(max(wall_s, finished.max(initial=0.0)))
    rows = max(n_workers, int(worker.max(initial=-1)) + 1)
    y_bottom = TOP + rows * ROW_H
    order = np.lexsort((started, worker))
    rank = np.arange(len(order)) - np.searchsorted(worker[order], worker[order], side="left")
    parity = np.empty_like(rank)
    parity[order] = rank % 2
    colours = np.where(routing["attempt"] > 0, ORANGE, np.where(parity == 0, BLUE, LIGHT_BLUE))
    xs = LEFT + started / ticks[-1] * PLOT_W
    widths = np.maximum((finished - started) / ticks[-1] * PLOT_W, 0.6)
    body = _x_axis(ticks, TOP, y_bottom, "time since run start (s)")
    body += _row_labels([f"worker {j}" for j in range(rows)])
    body += [_el("rect", _tip(f"chunk {seq}, rows {a}-{b}, attempt {attempt}, {_bytes(n)}, "
                              f"{t0:.3f}-{t1:.3f} s"),
                 class_="task", x=float(x), y=TOP + j * ROW_H + 3, width=float(width), height=ROW_H - 6,
                 fill=colour)
             for x, width, j, colour, seq, a, b, attempt, n, t0, t1 in zip(
                 xs, widths, worker, colours, routing["seq"], routing["start"], routing["stop"],
                 routing["attempt"], routing["bytes"], started, finished, strict=True)]
    return _svg("chart-timeline", y_bottom + BOTTOM, "Tasks per worker over time", body)


def queue_waits(routing: dict[str, np.ndarray]) -> np.ndarray:
    """Seconds each task waited in its worker's queue: started_at - queued_at."""
    return routing["started_at"].astype(float) - routing["queued_at"].astype(float)


def chart_queue_wait(waits: np.ndarray) -> str:
    """Histogram of queue waits, with the median and the 95th percentile marked."""
    divisor, unit = _scale(waits.max(initial=0.0), TIME_UNITS)
    scaled = waits / divisor
    high = scaled.max(initial=0.0) or 1.0
    bins = min(MAX_HIST_BINS, len(np.histogram_bin_edges(scaled, bins="auto", range=(0, high))) - 1)
    counts, edges = np.histogram(scaled, bins=bins, range=(0, high))
    x_ticks, y_ticks = _ticks(high), _ticks(counts.max(initial=0), n=4, whole=True)
    plot_h = 220
    y_bottom = TOP + plot_h
    xs = LEFT + edges / x_ticks[-1] * PLOT_W
    ys = y_bottom - counts / y_ticks[-1] * plot_h
    body = _x_axis(x_ticks, TOP, y_bottom, f"queue wait: started_at - queued_at ({unit})")
    for v in y_ticks:
        y = float(y_bottom - v / y_ticks[-1] * plot_h)
        body += [_el("line", x1=LEFT, x2=LEFT + PLOT_W, y1=y, y2=y, stroke="#eee"),
                 _text(_tick_label(v), LEFT - 8, y + 4, text_anchor="end")]
    body.append(_text("tasks", 0, 0, class_="axis-title", text_anchor="middle",
                      transform=f"translate({LEFT - 62},{TOP + plot_h / 2}) rotate(-90)"))
    body += [_el("rect", _tip(f"{a:.3g}-{b:.3g} {unit}: {c:,} tasks"), class_="bin", data_count=int(c),
                 x=float(x0), y=float(y), width=float(max(x1 - x0 - 1, 0.6)), height=float(y_bottom - y),
                 fill=BLUE)
             for c, a, b, x0, x1, y in zip(counts, edges[:-1], edges[1:], xs[:-1], xs[1:], ys, strict=True)]
    for i, (name, q) in enumerate((("median", 50), ("p95", 95))):
        v = float(np.percentile(scaled, q)) if len(scaled) else 0.0
        x = float(LEFT + v / x_ticks[-1] * PLOT_W)
        body += [_el("line", x1=x, x2=x, y1=TOP, y2=y_bottom, stroke=ORANGE, stroke_dasharray="5 3"),
                 _text(f"{name} {v:.3g} {unit}", x + 4, TOP + 12 + 14 * i, fill=ORANGE, class_="mark")]
    return _svg("chart-queue-wait", y_bottom + BOTTOM, "Distribution of queue waits", body)


def chart_imbalance(routing: dict) -> str:
    """Measured max/mean load beside the uniform-random expectation, on an axis starting at 1 (perfect)."""
    bars = [(f"this run ({routing.get('router', '?')})", float(routing.get("imbalance", 1.0)), BLUE),
            ("uniform random routing, expected", float(routing.get("expected_imbalance_uniform", 1.0)), GREY)]
    ticks = _ticks(max(max(v for _, v, _ in bars) - 1.0, 0.05), n=5)
    row_h = ROW_H + 8
    y_bottom = TOP + len(bars) * row_h
    body = _x_axis(ticks, TOP, y_bottom, "max worker load / mean load (1 = perfect balance)", offset=1.0)
    body += _row_labels(["this run", "uniform random"], row_h)
    for i, (label, v, colour) in enumerate(bars):
        width = max(v - 1.0, 0.0) / ticks[-1] * PLOT_W
        body += [_el("rect", _tip(f"{label}: {v:.4f}"), class_="bar", x=LEFT, y=TOP + i * row_h + 4,
                     width=width, height=row_h - 8, fill=colour),
                 _value_label(f"{v:.3f}", width, TOP + i * row_h + row_h / 2 + 4, "#222" if i else "#fff")]
    return _svg("chart-imbalance", y_bottom + BOTTOM, "Load imbalance against uniform random routing", body)


# -------------------------------------------------------------------- HTML
def _table(header: list[str], rows: list[list[object]], left: int = 1) -> str:
    """An HTML table; the first `left` columns are text (left-aligned), the rest numbers (right)."""
    def cells(tag: str, row: list[object]) -> str:
        return "".join(_el(tag, escape(str(v)), class_="l") if i < left else _el(tag, escape(str(v)))
                       for i, v in enumerate(row))

    return ("<table><thead><tr>" + cells("th", header) + "</tr></thead><tbody>"
            + "".join(f"<tr>{cells('td', r)}</tr>" for r in rows) + "</tbody></table>")


def _card(label: str, value: str, unit: str = "") -> str:
    return _el("div", _el("div", escape(label), class_="k") + _el("div", escape(value), class_="v")
               + _el("div", escape(unit), class_="u"), class_="card")


def _rates(manifest: dict) -> tuple[float, float, float, float]:
    """(wall seconds, MB/s, documents/s, tokens/s) of the whole run."""
    counts = manifest["counts"]
    wall = float(manifest.get("timings", {}).get("wall_s", 0.0))
    per_s = 1 / wall if wall > 0 else 0.0
    return wall, counts["bytes_in"] * per_s / 1e6, counts["documents_in"] * per_s, counts["tokens"] * per_s


def _wait_stats(waits: np.ndarray) -> dict[str, str]:
    if not len(waits):
        return {}
    values = {"mean": waits.mean(), "median": np.median(waits), "p95": np.percentile(waits, 95),
              "max": waits.max(), "total": waits.sum()}
    return {k: _seconds(float(v)) for k, v in values.items()}


def _summary(manifest: dict) -> str:
    counts = manifest["counts"]
    wall, mb_s, docs_s, tokens_s = _rates(manifest)
    n_in = counts["documents_in"]
    accounted = counts["documents_out"] + counts["quarantined"] + counts["filtered"]
    check = (_el("p", escape(f"documents in = written + quarantined + filtered ({n_in:,})"), class_="ok")
             if accounted == n_in else
             _el("p", escape(f"accounting mismatch: documents in {n_in:,}, but written + quarantined + "
                             f"filtered = {accounted:,}"), class_="bad"))
    cards = [
        _card("documents in", f"{n_in:,}"),
        _card("written", f"{counts['documents_out']:,}"),
        _card("quarantined", f"{counts['quarantined']:,}"),
        _card("filtered", f"{counts['filtered']:,}"),
        _card("tokens", f"{counts['tokens']:,}"),
        _card("text in", _bytes(counts["bytes_in"]), f"{counts['bytes_in']:,} bytes"),
        _card("wall time", f"{wall:,.2f} s"),
        _card("throughput", f"{mb_s:,.2f} MB/s", "text bytes per second"),
        _card("documents / s", f"{docs_s:,.0f}"),
        _card("tokens / s", f"{tokens_s:,.0f}"),
    ]
    return (f'<h2>Summary</h2><div class="cards">{"".join(cards)}</div>{check}{_filters_table(counts)}'
            f'{_dedup_table(manifest.get("dedup"))}')


def _dedup_table(dedup: dict | None) -> str:
    """Clusters (a kept document and the duplicates removed for it) by size."""
    if not dedup:
        return ""
    rows = [[size, f"{n:,}"] for size, n in dedup.get("cluster_sizes", {}).items()]
    return (f"<h3>Dedup: {dedup['exact_removed']:,} exact and {dedup['near_removed']:,} near duplicates removed, "
            f"{dedup['clusters']:,} clusters, largest {dedup['largest_cluster']:,}</h3>"
            + _table(["cluster size (documents)", "clusters"], rows))


def _filters_table(counts: dict) -> str:
    """Documents removed per rule (each under the first rule it failed), and those a rule set skipped."""
    by_rule, skipped = counts.get("filtered_by", {}), counts.get("filter_skipped", {})
    if not by_rule and not any(skipped.values()):
        return ""
    total = counts["documents_in"] or 1
    rows = [[rule, f"{n:,}", f"{100 * n / total:.2f} %"] for rule, n in by_rule.items()]
    rows += [[f"{name} (skipped: CJK)", f"{n:,}", f"{100 * n / total:.2f} %"] for name, n in skipped.items() if n]
    return ("<h3>Filtered, by the first rule each document failed</h3>"
            + _table(["rule", "documents", "of documents in"], rows))


def _workers_section(workers: list[dict]) -> str:
    if not workers:
        return '<h2>Workers</h2><p class="note">The manifest records no per-worker accounting.</p>'
    rows = [[f"worker {w['worker']}", f"{w['chunks']:,}", _bytes(w["bytes"]), f"{w.get('documents', 0):,}",
             f"{w.get('tokens', 0):,}", f"{w['busy_s']:.2f}", f"{w['idle_s']:.2f}",
             f"{w.get('queue_wait_s', 0.0):.2f}",
             f"{w['bytes'] / w['busy_s'] / 1e6:.2f}" if w["busy_s"] else "-", w.get("restarts", 0)]
            for w in workers]
    return ("<h2>Workers</h2><h3>Text routed per worker</h3>"
            + _legend([("bytes", BLUE), ("mean (dashed line)", "#222")]) + chart_worker_bytes(workers)
            + "<h3>Busy vs idle time per worker</h3>" + _legend([(label, c) for _, label, c in PHASES])
            + chart_worker_time(workers)
            + _table(["", "tasks", "bytes", "documents", "tokens", "busy s", "idle s", "queue wait s",
                      "MB/s while busy", "restarts"], rows))


def _timeline_sections(manifest: dict, routing_rows: dict[str, np.ndarray] | None) -> str:
    if routing_rows is None:
        return (f'<h2>Timeline and queue waits</h2><p class="note">This run has no {escape(ROUTING)}: '
                "the timeline and queue-wait charts are skipped.</p>")
    waits = queue_waits(routing_rows)
    retried = int((routing_rows["attempt"] > 0).sum())
    workers = len((manifest.get("routing") or {}).get("workers", []))
    stats = _wait_stats(waits)
    return "".join([
        "<h2>Timeline</h2>",
        _el("p", escape(f"One row per worker, one rectangle per task from its start to its finish "
                        f"({len(waits):,} tasks, {retried:,} finished on a retry).")),
        _legend([("task", BLUE), ("next task on the same worker", LIGHT_BLUE),
                 ("finished on a retry", ORANGE)]),
        chart_timeline(routing_rows, workers, _rates(manifest)[0]),
        "<h2>Queue waits</h2><p>Time from a task being sent to its worker to the worker starting it.</p>",
        chart_queue_wait(waits),
        _table(["tasks", *stats], [[f"{len(waits):,}", *stats.values()]], left=0),
    ])


def _balance_section(routing: dict) -> str:
    if not routing:
        return '<h2>Load balance</h2><p class="note">The manifest records no routing.</p>'
    row = [routing.get("router", "?"), routing.get("seed", "?"), f"{routing.get('decisions', 0):,}",
           f"{routing.get('tasks', 0):,}", f"{routing.get('imbalance', 0):.4f}",
           f"{routing.get('cv', 0):.4f}", f"{routing.get('expected_imbalance_uniform', 0):.4f}"]
    return ("<h2>Load balance</h2><p>Imbalance is the busiest worker's bytes over the mean (cv: their "
            "coefficient of variation); the expected value is what uniform random routing of the same "
            "number of tasks would give (balls into bins).</p>" + chart_imbalance(routing)
            + _table(["router", "seed", "decisions", "tasks", "imbalance", "cv", "expected (uniform random)"],
                     [row]))


def _tokenizer_section(tok: dict) -> str:
    rows = [["path", tok.get("path", "?")], ["sha256", tok.get("sha256", "?")],
            ["vocabulary", f"{tok.get('vocab_size', 0):,} ids"], ["backend", tok.get("backend", "?")],
            ["why this backend", tok.get("backend_reason") or "-"]]
    check = tok.get("verification") or {}
    if check:
        verdict = "identical ids" if check.get("ok") else "ids differ"
        first = f"; first difference: {check['first_difference']}" if check.get("first_difference") else ""
        rows.append(["fast-path check", f"{verdict} on {check.get('documents', 0):,} documents "
                     f"({check.get('differing', 0):,} differing, {check.get('seconds', 0):.2f} s){first}"])
    return "<h2>Tokenizer</h2>" + _table(["", ""], rows, left=2)


def _shards_section(shards: list[dict]) -> str:
    # every file of a shard (Parquet and the binary formats), one row each
    rows = [[f["file"], f"{s['rows']:,}", f"{s['tokens']:,}", _bytes(f["bytes"]),
             f"{s.get('first_seq', '?')}-{s.get('last_seq', '?')}", f["sha256"][:16]]
            for s in shards[:SHOWN_SHARDS] for f in s.get("files", [s])]
    more = f"<p>… and {len(shards) - SHOWN_SHARDS:,} more.</p>" if len(shards) > SHOWN_SHARDS else ""
    total = sum(f["bytes"] for s in shards for f in s.get("files", [s]))
    return (f"<h2>Shards</h2><p>{len(shards):,} shard(s), {escape(_bytes(total))} on disk.</p>"
            + _table(["file", "rows", "tokens", "size", "chunks", "sha256 (first 16)"], rows) + more)


def _inputs_section(manifest: dict) -> str:
    rows = [[i.get("path", "?"), i.get("format", "?"), _bytes(i.get("bytes", 0))]
            for i in manifest.get("inputs", [])]
    config = json.dumps(manifest.get("config", {}), indent=2, ensure_ascii=False)
    return ("<h2>Inputs and pipeline</h2>" + _table(["path", "format", "size"], rows, left=2)
            + f"<details><summary>effective pipeline (config)</summary><pre>{escape(config)}</pre></details>")


def build_report(out: Path) -> str:
    """The report page for the finished run in `out`, as one self-contained HTML string."""
    out = Path(out)
    manifest, routing_rows = _load(out)
    routing = manifest.get("routing") or {}
    tok = manifest.get("tokenizer", {})
    subtitle = (f"router {routing.get('router', '?')}, seed {routing.get('seed', '?')}, "
                f"{len(routing.get('workers', []))} workers · tokenizer {Path(tok.get('path', '?')).name}, "
                f"backend {tok.get('backend', '?')}")
    body = "".join([
        "<h1>prep run report</h1>", _el("p", escape(str(out.resolve())), class_="sub"),
        _el("p", escape(subtitle), class_="sub"),
        _summary(manifest), _workers_section(routing.get("workers", [])),
        _timeline_sections(manifest, routing_rows), _balance_section(routing), _tokenizer_section(tok),
        _shards_section(manifest.get("shards", [])), _inputs_section(manifest),
    ])
    return ('<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>prep report: {escape(out.resolve().name)}</title><style>{CSS}</style></head>"
            f"<body><main>{body}</main></body></html>\n")


def write_report(out: Path) -> Path:
    """Write OUT/report.html atomically (temp, fsync, rename) and return its path."""
    out = Path(out)
    path = out / REPORT
    write_atomic(path, build_report(out).encode("utf-8"))
    return path


def report_numbers(out: Path) -> list[str]:
    """The key numbers of the run as short lines for the terminal."""
    manifest, routing_rows = _load(Path(out))
    counts = manifest["counts"]
    wall, mb_s, docs_s, tokens_s = _rates(manifest)
    routing = manifest.get("routing") or {}
    tok = manifest.get("tokenizer", {})
    lines = [
        f"documents      {counts['documents_in']:,} in, {counts['documents_out']:,} written, "
        f"{counts['quarantined']:,} quarantined, {counts['filtered']:,} filtered",
        f"tokens         {counts['tokens']:,}",
        f"text           {_bytes(counts['bytes_in'])} in {wall:.2f} s: {mb_s:,.2f} MB/s, "
        f"{docs_s:,.0f} docs/s, {tokens_s:,.0f} tokens/s",
        f"tokenizer      {Path(tok.get('path', '?')).name}, backend {tok.get('backend', '?')}",
    ]
    if routing:
        lines.append(f"routing        {routing.get('router', '?')} (seed {routing.get('seed', '?')}), "
                     f"{len(routing.get('workers', []))} workers: "
                     f"imbalance {routing.get('imbalance', 0):.3f}, cv {routing.get('cv', 0):.3f}, "
                     "uniform random expects "
                     f"{routing.get('expected_imbalance_uniform', 0):.3f}")
    stats = _wait_stats(queue_waits(routing_rows)) if routing_rows is not None else {}
    if stats:
        lines.append(f"queue wait     median {stats['median']}, p95 {stats['p95']}, max {stats['max']}")
    return lines


def report_command(out: Annotated[Path, typer.Argument(help="an output directory of prep run")]) -> None:
    """Write OUT/report.html, a self-contained page about a finished run, and print its key numbers."""
    path = write_report(out)
    for line in report_numbers(out):
        typer.echo(line)
    typer.echo(f"report         {path}")
