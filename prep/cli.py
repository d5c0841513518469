"""The `prep` command line: flags override the pipeline file; errors are one clear line."""

from __future__ import annotations

import contextlib
import functools
import json
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from prep.errors import UserError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Turn raw text corpora into tokenized, feature-annotated, sharded Parquet.",
)


def _say_error(message: str) -> None:
    typer.echo(f"prep: error: {message}", err=True)


def friendly(fn):
    """User errors: one line, exit 2. A run that cannot go on: one line, exit 1. Bugs: a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from prep.errors import Interrupted, RunFailed

        try:
            return fn(*args, **kwargs)
        except UserError as exc:
            _say_error(str(exc))
            raise typer.Exit(2) from None
        except RunFailed as exc:
            _say_error(str(exc))
            raise typer.Exit(1) from None
        except (Interrupted, KeyboardInterrupt) as exc:
            signum = getattr(exc, "signum", 2)
            name = "SIGTERM" if signum == 15 else "SIGINT"
            _say_error(f"interrupted ({name}); committed shards are kept. Continue with the same command "
                       "and --resume")
            raise typer.Exit(128 + signum) from None

    return wrapper


def _parse_slow(values: list[str] | None) -> dict[int, float]:
    slow = {}
    for value in values or []:
        try:
            worker, factor = value.split(":")
            slow[int(worker)] = float(factor)
        except ValueError:
            raise UserError(f"bad --debug-slow-worker {value!r}: use J:FACTOR, e.g. 1:3") from None
    return slow


@app.command()
@friendly
def run(
    pipeline: Annotated[Path | None, typer.Argument(help="pipeline file (TOML); default: built-in pretraining")] = None,
    input: Annotated[list[str], typer.Option("--input", "-i", help="files, directories or globs")] = None,
    output: Annotated[str, typer.Option("--output", "-o", help="output directory (--engine ray: also a URI, "
                                                            "s3://, gs://, hdfs://)")] = None,
    tokenizer: Annotated[str | None, typer.Option(help="tokenizer.json")] = None,
    workers: Annotated[int | None, typer.Option(help="worker processes; 0 (the default) means the CPU count")] = None,
    router: Annotated[str | None, typer.Option(help="p2c (default) | random | weighted | round-robin")] = None,
    seed: Annotated[int | None, typer.Option(help="routing seed")] = None,
    chunk_bytes: Annotated[str | None, typer.Option(
        help="input per chunk (JSON Lines, CSV: bytes of whole records; Parquet: text size in its metadata; "
             "datasets: text; .txt: file sizes), e.g. 1MiB")] = None,
    max_document_bytes: Annotated[str | None, typer.Option(help="a longer record is quarantined (default "
                                                                "64MiB)")] = None,
    shard_bytes: Annotated[str | None, typer.Option(
        help="input per shard, counted as --chunk-bytes counts it, e.g. 256MiB")] = None,
    text_field: Annotated[str | None, typer.Option(help="field holding the text")] = None,
    id_field: Annotated[str | None, typer.Option(help="field holding the document id")] = None,
    keep_text: Annotated[bool | None, typer.Option("--keep-text/--no-keep-text", help="write the text")] = None,
    keep_column: Annotated[list[str] | None, typer.Option("--keep-column", help="input column to carry")] = None,
    features: Annotated[str | None, typer.Option(help="comma-separated features, or 'all'")] = None,
    backend: Annotated[str | None, typer.Option(help="auto | tokenizers | tokenizers-1 | tiktoken")] = None,
    append_eos: Annotated[bool | None, typer.Option("--append-eos/--no-append-eos")] = None,
    format: Annotated[list[str] | None, typer.Option("--format", help="parquet (default) | megatron | llmc; "
                                                     "repeat for several")] = None,
    llmc_dtype: Annotated[str | None, typer.Option(help="auto (default) | uint16 | uint32")] = None,
    pack_seq_len: Annotated[int | None, typer.Option(help="pack documents into rows of N tokens")] = None,
    pack_method: Annotated[str | None, typer.Option(help="concat (default) | bfd")] = None,
    strict: Annotated[bool | None, typer.Option("--strict/--no-strict", help="first bad record is an error")] = None,
    keep_filtered: Annotated[bool | None, typer.Option("--keep-filtered/--no-keep-filtered",
                                                       help="write _filtered.parquet: id, rule and failing "
                                                            "value of each filtered document")] = None,
    dedup: Annotated[str | None, typer.Option(help="remove duplicates of earlier documents: exact | near | "
                                                           "exact,near | off")] = None,
    dedup_memory: Annotated[str | None, typer.Option(help="dedup index memory before it spills to disk "
                                                          "(default 2GiB)")] = None,
    dedup_threshold: Annotated[float | None, typer.Option(help="near dedup: also require this Jaccard "
                                                                "similarity of the shingles")] = None,
    chunk_timeout: Annotated[float | None, typer.Option(help="seconds per chunk_bytes of text: a hang")] = None,
    overwrite: Annotated[bool, typer.Option(help="replace an existing output")] = False,
    resume: Annotated[bool, typer.Option(help="continue an interrupted run")] = False,
    progress: Annotated[bool, typer.Option("--progress/--no-progress")] = True,
    report: Annotated[bool, typer.Option(help="write OUT/report.html at the end")] = False,
    debug_slow_worker: Annotated[list[str] | None, typer.Option(help="J:FACTOR, make worker J slower")] = None,
    engine: Annotated[str, typer.Option(help="local (processes) | ray (actors on a Ray cluster)")] = "local",
    ray_address: Annotated[str | None, typer.Option(help="--engine ray: the cluster (default: RAY_ADDRESS, else "
                                                         "a local Ray instance)")] = None,
) -> None:
    """Tokenize and annotate a corpus into sharded Parquet."""
    from prep.config import apply_overrides, load_pipeline

    features_asked = [f.strip() for f in features.split(",") if f.strip()] if features else None
    if engine == "local":  # as soon as the pipeline is known: the forkserver (started by prep.launch) is told it
        from prep.engines.local.forkserver import start_forkserver

        with contextlib.suppress(UserError):  # a bad pipeline is said below
            start_forkserver(apply_overrides(load_pipeline(pipeline), features=features_asked).compiled_code())
        from prep.core.allocator import reuse_freed_buffers

        reuse_freed_buffers()  # this process cuts the input: after the forkserver's start, which must not inherit it
    from tqdm import tqdm

    from prep.core.dedup import check_dedup, parse_methods
    from prep.request import RunRequest
    from prep.run import run_pipeline
    from prep.tools.summary import format_summary

    if not input:
        raise UserError("no input: pass --input PATH (files, directories or globs)")
    if output is None:
        raise UserError("no output: pass --output DIR")
    config = apply_overrides(
        load_pipeline(pipeline), tokenizer=tokenizer, workers=workers, router=router, seed=seed,
        chunk_bytes=chunk_bytes, shard_bytes=shard_bytes, text_field=text_field, id_field=id_field,
        keep_text=keep_text, keep_columns=keep_column, backend=backend, append_eos=append_eos, strict=strict,
        chunk_timeout_s=chunk_timeout, max_document_bytes=max_document_bytes, keep_filtered=keep_filtered,
        formats=format, llmc_dtype=llmc_dtype, pack_seq_len=pack_seq_len, pack_method=pack_method,
        features=features_asked,
        dedup_exact=None if dedup is None else "exact" in parse_methods(dedup), dedup_memory=dedup_memory,
        dedup_near=None if dedup is None else "near" in parse_methods(dedup), dedup_threshold=dedup_threshold,
    )
    check_dedup(config)
    if config.workers < 0:
        raise UserError(f"--workers {config.workers}: give a count of at least 1, or 0 for the CPU count")
    bar = None
    started = time.perf_counter()
    docs = [0]

    def on_start(info: dict) -> None:
        nonlocal bar
        tok = info["tokenizer"]
        for note in tok.notes:
            typer.echo(f"note: {note}", err=True)
        typer.echo(f"prep: {info['files']} input file(s), {info['workers']} workers, router {config.router}, "
                   f"backend {tok.backend}" + (f" ({tok.backend_reason})" if tok.backend_reason else "")
                   + (f", resuming after {info['resumed_shards']} committed shard(s)" if resume else ""), err=True)
        if info.get("resume_note"):
            typer.echo(f"note: {info['resume_note']}", err=True)
        bar = tqdm(total=info["total_bytes"], unit="B", unit_scale=True, desc="prep", disable=not progress,
                   dynamic_ncols=True, smoothing=0.1)

    def on_progress(nbytes: int, ndocs: int) -> None:
        docs[0] += ndocs
        if bar is not None:
            bar.update(nbytes)
            bar.set_postfix_str(f"{docs[0] / max(1e-9, time.perf_counter() - started):,.0f} docs/s", refresh=False)

    try:
        result = run_pipeline(RunRequest(input, output if "://" in output else Path(output), config, overwrite,
                                         resume, progress, _parse_slow(debug_slow_worker), engine, ray_address),
                              on_start, on_progress)
    finally:
        if bar is not None:
            bar.close()
    typer.echo(format_summary(result.manifest))
    if result.faults:
        typer.echo(f"\nfaults survived: {len(result.faults)} (first: {result.faults[0]})")
    if report and "://" in output:
        typer.echo("report         not written: --report needs a local output directory")
    elif report:
        from prep.tools.report import write_report

        typer.echo(f"report         {write_report(Path(output))}")


@app.command()
@friendly
def inspect(
    out: Annotated[Path, typer.Argument(help="an output directory of prep run")],
    json_out: Annotated[bool, typer.Option("--json", help="print the manifest as JSON")] = False,
    verify: Annotated[bool, typer.Option("--verify/--no-verify", help="check every output file's size and "
                                         "sha256 against the manifest (exit 1 naming the first bad one)")] = True,
) -> None:
    """Show what a run wrote: counts, shards, schema, routing, timings."""
    from prep.io.trainer_formats import describe_formats
    from prep.io.writer import JOURNAL, MANIFEST, read_journal
    from prep.tools.summary import format_schema, format_summary

    path = out / MANIFEST
    if not path.exists():
        if (out / JOURNAL).exists():
            _, entries = read_journal(out)
            raise UserError(f"{out} is an unfinished run ({len(entries)} shard(s) committed, no {MANIFEST}); "
                            "finish it with prep run ... --resume")
        raise UserError(f"no {MANIFEST} in {out}: not an output directory of prep run")
    manifest = json.loads(path.read_text(encoding="utf-8"))
    if verify:
        from prep.io.verify import first_bad_entry

        bad = first_bad_entry(manifest.get("shards", []), str(out.resolve()))
        if bad is not None:
            _say_error(f"{out}: {bad[1]} (the manifest lists it); rerun the command with --overwrite")
            raise typer.Exit(1)
    if json_out:
        typer.echo(json.dumps(manifest, indent=2, ensure_ascii=False))
        return
    typer.echo(format_summary(manifest))
    typer.echo(format_schema(out, manifest))
    if formats := describe_formats(out, manifest):
        typer.echo(formats)


# Subcommands whose modules are imported only when they run (or when help lists them): `prep run` should not
# pay for the benchmark's or the report's imports. name -> (module, function, help)
_LAZY_COMMANDS = {
    "train-tokenizer": ("prep.tools.train_tokenizer", "train_tokenizer_command",
                        "Train a byte-level BPE tokenizer.json on a corpus."),
    "simulate": ("prep.tools.simulate", "simulate_command", "Simulate routers without tokenizing."),
    "report": ("prep.tools.report", "report_command", "Write OUT/report.html about a finished run."),
    "bench": ("prep.tools.bench", "bench_command", "Benchmark prep against its ceiling (workers x one tokenizer "
              "thread) and the tools users run today."),
}


def _register(only: str | None = None) -> None:
    """Add the lazy subcommands: all of them, or only the one named."""
    import importlib

    for name, (module, function, help_text) in _LAZY_COMMANDS.items():
        if only is None or name == only:
            app.command(name, help=help_text)(friendly(getattr(importlib.import_module(module), function)))


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    command = next((a for a in args if not a.startswith("-")), None)
    _register(command if command in _LAZY_COMMANDS or command in ("run", "inspect") else None)
    if argv is not None:  # called from Python: the caller's process goes on
        app(args=args, prog_name="prep")
        return
    try:
        app(args=args, prog_name="prep")
    except SystemExit as done:
        _exit_without_teardown(done.code)
    _exit_without_teardown(0)


def _exit_without_teardown(code: int | str | None) -> None:
    """End the `prep` command once its work and its exit handlers are done, without the interpreter's teardown of
    every module (numpy, pyarrow: ~0.05-0.15 s after a run, on the command's wall time). Threads that are not
    daemons are waited for, as the interpreter would; the idle forkserver is killed."""
    import atexit
    import os
    import threading

    if isinstance(code, str):
        print(code, file=sys.stderr)
    if "prep.engines.local.forkserver" in sys.modules:  # a local run started one
        sys.modules["prep.engines.local.forkserver"].kill_forkserver()
    for thread in threading.enumerate():
        if thread is not threading.main_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()  # noqa: SLF001 - what the interpreter runs first at exit
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # a closed pipe: nothing more to say there
            stream.flush()
    os._exit(code if isinstance(code, int) else 0 if code is None else 1)


if __name__ == "__main__":
    sys.exit(main())
