"""Human-readable views of a manifest: the end-of-run summary and `prep inspect`."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq

from prep.io.trainer_formats import packing_line


def _mb(n: float) -> str:
    return f"{n / 1e6:,.1f} MB"


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).rjust(w) if i else str(c).ljust(w) for i, (c, w) in enumerate(zip(r, widths,
                                                                                                  strict=True)))
             for r in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def format_summary(manifest: dict) -> str:
    """Counts, throughput, per-worker load and shards, in one screen."""
    counts, timings = manifest["counts"], manifest.get("timings", {})
    wall = timings.get("wall_s", 0.0) or 1e-9
    tok = manifest.get("tokenizer", {})
    routing = manifest.get("routing", {})
    balance = (counts["documents_out"] + counts["quarantined"] + counts["filtered"]) == counts["documents_in"]
    lines = [
        f"documents in   {counts['documents_in']:>14,}",
        f"  written      {counts['documents_out']:>14,}",
        f"  quarantined  {counts['quarantined']:>14,}",
        f"  filtered     {counts['filtered']:>14,}",
        *[f"    {rule:<44} {count:>10,}" for rule, count in counts.get("filtered_by", {}).items()],
        *[f"    skipped by {name:<33} {count:>10,} (CJK)" for name, count in counts.get("filter_skipped", {}).items()
          if count],
        f"  check        {'in = written + quarantined + filtered' if balance else 'MISMATCH'}",
        f"tokens         {counts['tokens']:>14,}",
        f"text bytes     {_mb(counts['bytes_in']):>14}",
        f"wall time      {wall:>12.2f} s",
        f"throughput     {counts['bytes_in'] / wall / 1e6:>10.2f} MB/s   {counts['documents_in'] / wall:,.0f} docs/s"
        f"   {counts['tokens'] / wall:,.0f} tokens/s",
        f"tokenizer      {Path(tok.get('path', '?')).name} ({tok.get('vocab_size', '?')} ids, backend "
        f"{tok.get('backend', '?')}{': ' + tok['backend_reason'] if tok.get('backend_reason') else ''})",
    ]
    if dedup := manifest.get("dedup"):
        sizes = ", ".join(f"{size}: {n:,}" for size, n in dedup.get("cluster_sizes", {}).items()) or "none"
        lines += [f"dedup          {dedup['exact_removed']:,} exact, {dedup['near_removed']:,} near duplicates "
                  f"removed; {dedup['clusters']:,} clusters, largest {dedup['largest_cluster']:,}"
                  f"{' (index spilled to disk)' if dedup.get('spilled') else ''}",
                  f"  cluster sizes (documents: clusters) {sizes}"]
    if routing:
        lines.append(
            f"routing        {routing['router']} (seed {routing['seed']}): imbalance {routing['imbalance']:.3f} "
            f"(uniform random expects {routing.get('expected_imbalance_uniform', float('nan')):.3f})"
        )
        rows = [
            [f"worker {w['worker']}", w["chunks"], _mb(w["bytes"]), f"{w['documents']:,}", f"{w['busy_s']:.2f} s",
             f"{w['idle_s']:.2f} s", f"{w['queue_wait_s']:.2f} s", w.get("restarts", 0)]
            for w in routing["workers"]
        ]
        lines += ["", _table(rows, ["", "chunks", "bytes", "docs", "busy", "idle", "queue wait", "restarts"])]
    if "coordinator_waiting_s" in timings:  # the local engine's: a process that never waits is the one waited for
        t = timings
        lines += [f"coordinator    CPU {t['coordinator_cpu_s']:.2f} s, waited {t['coordinator_waiting_s']:.2f} s for "
                  f"messages, peak RSS {t['coordinator_peak_rss_mb']:.0f} MB",
                  f"writer         CPU {t['writer_cpu_s']:.2f} s; its main thread {t['writer_main_cpu_s']:.2f} s, "
                  f"waited {t['writer_waiting_s']:.2f} s for messages"]
    if packing := manifest.get("packing"):
        lines.append(packing_line(packing))
    shards = manifest.get("shards", [])
    on_disk = sum(f["bytes"] for s in shards for f in s.get("files", [s]))
    formats = sorted({f["format"] for s in shards for f in s.get("files", [])})
    kinds = f", {', '.join(formats)}" if formats else ""
    lines += ["", f"shards         {len(shards)} ({_mb(on_disk)} on disk{kinds})"]
    for s in shards[:5]:
        lines.append(f"  {s['file'] or s['files'][0]['file']}  {s['rows']:>10,} rows  {s['tokens']:>12,} tokens  "
                     f"{_mb(sum(f['bytes'] for f in s.get('files', [s])))}")
    if len(shards) > 5:
        lines.append(f"  … and {len(shards) - 5} more")
    return "\n".join(lines)


def format_schema(out: Path, manifest: dict) -> str:
    shards = [s for s in manifest.get("shards", []) if s["file"]]
    if not shards:
        return "schema         (no Parquet shards)"
    schema = pq.read_schema(out / shards[0]["file"])
    return "schema\n" + "\n".join(f"  {field.name}: {field.type}" for field in schema)
