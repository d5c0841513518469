"""Quality filter rules: configuration, each rule at its threshold, languages, accounting, determinism."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import GPT2, ROOT, corpus_docs, load_script, prep_cmd, shard_bytes_of, write_jsonl

from prep.config import load_pipeline
from prep.errors import UserError
from prep.text.features import FEATURES
from prep.text.filters import RULE_SETS, check_filters, text_verdict


def verdict(texts: list[str], **filters) -> list[str | None]:
    """The first rule each text fails (None: kept)."""
    v = text_verdict(pa.array(texts), check_filters(filters, FEATURES))
    return [v.names[r] if r >= 0 else None for r in v.rule.tolist()]


def word(j: int) -> str:
    """The j-th of 26**5 distinct five-letter words."""
    return "".join(chr(97 + (j // 26**k) % 26) for k in range(5))


def sentence(i: int) -> str:
    """An English-looking sentence of 10 words; no two words of different sentences are equal but the
    stop words."""
    w = [word(8 * i + k) for k in range(8)]
    return f"The {w[0]} {w[1]} {w[2]} of {w[3]} {w[4]} and {w[5]} {w[6]} {w[7]}."


def prose(sentences: int) -> str:
    return "\n".join(sentence(i) for i in range(sentences))


def test_empty_table_means_datatrove_defaults_and_thresholds_override(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text("[filter.gopher_quality]\nmin_words = 30\n\n[filter.fineweb]\n\n"
                    "[filter.bounds]\nnum_tokens = {min = 32}\n")
    config = load_pipeline(path)
    assert config.filters["gopher_quality"] == RULE_SETS["gopher_quality"] | {"min_words": 30}
    assert config.filters["fineweb"] == RULE_SETS["fineweb"]
    assert list(config.filters) == ["gopher_quality", "fineweb", "bounds"]  # the file's order is the rule order
    assert RULE_SETS["gopher_quality"]["min_words"] == 50 and RULE_SETS["gopher_repetition"]["max_dup_10gram"] == 0.1


@pytest.mark.parametrize(("toml", "message"), [
    ("[filter.gopher_qualty]\n", "unknown filter rule set 'gopher_qualty'; known: gopher_quality, "
                                 "gopher_repetition, c4, fineweb, bounds"),
    ("[filter.c4]\nmin_sentence = 3\n", "unknown threshold 'min_sentence' in [filter.c4]; known: max_word_length"),
    ("[filter.bounds]\nnum_tokenz = {min = 3}\n", "unknown feature 'num_tokenz' in [filter.bounds]; known: num_bytes"),
    ("[filter.bounds]\nnum_tokens = {least = 3}\n", "[filter.bounds] num_tokens must be {min = X}"),
    ("[filter]\ngopher = 1\n", "unknown key 'gopher' in [filter]; known: drop_empty, keep_filtered, "
                               "[filter.gopher_quality]"),
    ("[filter.fineweb]\nmax_short_lines = 'x'\n", "[filter.fineweb] max_short_lines must be a number"),
])
def test_unknown_rule_or_threshold_is_a_user_error(tmp_path: Path, toml: str, message: str) -> None:
    path = tmp_path / "p.toml"
    path.write_text(toml)
    with pytest.raises(UserError, match=None) as info:
        load_pipeline(path)
    assert message in str(info.value)
    inp = write_jsonl(tmp_path / "in.jsonl", [{"id": "a", "text": "x"}])
    proc = prep_cmd("run", path, "-i", inp, "-o", tmp_path / "out", "--tokenizer", GPT2)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and message in proc.stderr and "Traceback" not in proc.stderr


def test_gopher_quality_each_rule_at_its_threshold() -> None:
    words50 = " ".join(["the", "and"] + [f"word{i}" for i in range(48)])
    assert verdict([words50], gopher_quality={}) == [None]
    assert verdict([words50.rsplit(" ", 1)[0]], gopher_quality={}) == ["gopher_quality.min_words"]
    assert verdict([words50.rsplit(" ", 1)[0]], gopher_quality={"min_words": 49}) == [None]
    assert verdict([words50.replace("the", "teh")], gopher_quality={}) == ["gopher_quality.min_stop_words"]
    long_words = " ".join(["the", "and"] + [f"wordwordword{i}" for i in range(48)])
    assert verdict([long_words], gopher_quality={}) == ["gopher_quality.max_mean_word_length"]
    # six '#' among 52 words: 0.115 > 0.1; five: 0.096
    assert verdict([words50 + " # # # # # #"], gopher_quality={}) == ["gopher_quality.max_hash_ratio"]
    assert verdict([words50 + " # # # # #"], gopher_quality={"min_alpha_words": 0.5}) == [None]
    bullets = "\n".join(f"- {w}" for w in words50.split())
    assert verdict([bullets], gopher_quality={}) == ["gopher_quality.max_bullet_lines"]
    assert verdict([bullets], gopher_quality={"max_bullet_lines": False, "min_alpha_words": 0.3}) == [None]


@pytest.mark.parametrize("stops", [[], [word(3)], [word(j) for j in range(150, 250)],
                                   [word(j) for j in range(0, 600, 3)]])
def test_any_number_of_stop_words_is_counted(stops: list[str]) -> None:
    """The distinct stop words of a text of plain words, however many stop words there are (the compiled
    lookup has a slot per stop word, and a slow path where two want the same)."""
    words = [word(j) for j in range(200)]
    off = {k: False for k in RULE_SETS["gopher_quality"] if k.startswith(("min_", "max_"))}
    settings = check_filters({"gopher_quality": dict(off, min_stop_words=10**6, stop_words=stops)}, FEATURES)
    counted = text_verdict(pa.array([" ".join(words * 2), "", " ".join(stops)]), settings).value
    assert counted.tolist() == [len(set(stops) & set(words)), 0, len(set(stops))]


def test_gopher_repetition_lines_paragraphs_and_ngrams() -> None:
    text = prose(20)
    assert verdict([text], gopher_repetition={}) == [None]
    repeated = "\n".join([sentence(1)] * 4 + [sentence(i) for i in range(5, 12)])
    assert verdict([repeated], gopher_repetition={}) == ["gopher_repetition.max_dup_line_char_frac"]
    paragraphs = "\n\n".join([sentence(1)] * 4 + [sentence(i) for i in range(5, 10)])
    assert verdict([paragraphs], gopher_repetition={}) == ["gopher_repetition.max_dup_para_frac"]
    spam = " ".join(word(i) for i in range(180)) + " buy cheap pills now today" * 30
    assert verdict([spam], gopher_repetition={"max_top_2gram": False, "max_top_3gram": False,
                                              "max_top_4gram": False}) == ["gopher_repetition.max_dup_5gram"]


def test_c4_lines_and_documents() -> None:
    text = prose(6)
    assert verdict([text], c4={}) == [None]
    assert verdict([prose(4)], c4={}) == ["c4.min_sentences"]
    assert verdict([text + "\nSome lorem ipsum dolor text."], c4={}) == ["c4.lorem_ipsum"]
    assert verdict([text + "\nA function f() { return 1; } here."], c4={}) == ["c4.curly_bracket"]
    # a line without terminal punctuation is not counted, so the document is one sentence short
    assert verdict([prose(5).rstrip(".")], c4={}) == ["c4.min_sentences"]
    assert verdict([prose(5) + "\nPlease enable javascript to see more."], c4={}) == [None]
    assert verdict([prose(4) + "\nPlease enable javascript to see more."], c4={}) == ["c4.min_sentences"]
    assert verdict([prose(4)], c4={"min_sentences": 4}) == [None]


def test_c4_substrings_and_sentences_agree_with_python_and_arrow() -> None:
    """C4's compiled line checks on random lines dense with near misses: which substrings a line holds, against
    Python's `in`; its sentences, against Arrow's count_substring_regex of the regex they stand for."""
    import random

    import pyarrow.compute as pc

    from prep.text import _kernels
    from prep.text.filters import POLICY_SUBSTRINGS, _build, _classes

    needles, needle_ends, shift = _build({"c4": RULE_SETS["c4"]}).args[8:11]
    words = ["lorem ipsum", "javascript", *POLICY_SUBSTRINGS]
    pieces = [w[:k] for w in words for k in range(1, len(w) + 1)] + [
        " ", "  ", "\t", ".", "!", "?", "...", "\"", ")", "(", "a", "x", "é", "中", "。", "-", "Ab", "e.g."]
    rng = random.Random(14)
    lines = ["".join(rng.choices(pieces, k=rng.randint(0, 40))) for _ in range(3000)] + words + ["", "use of cookie"]
    regex = r"(?:^|[^.!?])[.!?][\pP]*\s+\pP*[^\s\pP]"
    sentences = pc.count_substring_regex(pa.array(lines), regex).to_pylist()
    for line, expected in zip(lines, sentences, strict=True):
        chars = np.array([ord(c) for c in line], np.int32)
        stops = np.flatnonzero(np.isin(chars, [0x21, 0x2E, 0x3F])).astype(np.int32)
        found = _kernels._find(chars, len(chars), needles, needle_ends, shift)
        assert [bool(found >> w & 1) for w in range(len(words))] == [w in line for w in words], line
        assert _kernels._sentence_breaks(chars, len(chars), _classes(), stops, len(stops)) == expected, line


def test_fineweb_rules() -> None:
    assert verdict([prose(10)], fineweb={}) == [None]
    no_punct = "\n".join(sentence(i)[:-1] + " more words follow here" for i in range(10))
    assert verdict([no_punct], fineweb={}) == ["fineweb.min_line_punct"]
    short = prose(2) + "\n" + "\n".join(f"Item {i}." for i in range(8))
    assert verdict([short], fineweb={}) == ["fineweb.max_short_lines"]
    dup = prose(10) + "\n" + sentence(3)
    assert verdict([dup], fineweb={}) == ["fineweb.max_dup_line_chars"]


@pytest.mark.parametrize("name", list(RULE_SETS))
def test_empty_texts_anywhere_in_a_batch(name: str) -> None:
    """Empty and blank texts, also last in the batch (with drop_empty off they reach the rules), are removed and
    change nothing for the others."""
    text = prose(12)
    got = verdict(["", text, " \n ", text, ""], **{name: {}})
    assert got[1] == got[3] == verdict([text], **{name: {}})[0] is None
    assert None not in (got[0], got[2], got[4])


def test_first_rule_in_file_order_wins_and_chinese_is_skipped_not_dropped() -> None:
    short = "The cat and the dog."
    assert verdict([short], c4={}, gopher_quality={}) == ["c4.min_sentences"]
    assert verdict([short], gopher_quality={}, c4={}) == ["gopher_quality.min_words"]
    chinese = corpus_docs("zh_poetry", 50)
    texts = [d["text"] for d in chinese]
    v = text_verdict(pa.array(texts), check_filters({name: {} for name in RULE_SETS}, FEATURES))
    assert v.keep.all()
    assert v.skipped == {name: len(texts) for name in RULE_SETS}
    v = text_verdict(pa.array(texts), check_filters({"gopher_quality": {"skip_frac_cjk": 1.0}}, FEATURES))
    assert not v.keep.any()  # judged as English, every poem is "too short": why the skip exists


@pytest.mark.parametrize("order", [list(RULE_SETS), list(reversed(RULE_SETS))])
def test_rule_sets_together_judge_as_each_alone_in_turn(order: list[str]) -> None:
    """A document is measured only for the rules still to judge (the compiled loop stops at the first failed):
    with all four rule sets, its first failed rule and value are those of the first set, in file order, that
    fails it alone."""
    texts = [d["text"] for name in ("en_wikitext2", "en_fortunes", "code_python_stdlib", "web_html_pages",
                                    "zh_manpages", "en_foldoc") for d in corpus_docs(name, 60)]
    texts += [prose(8) + "\nlorem ipsum { here.\n" + prose(3), prose(8) + "\nA { b.\nlorem ipsum.", "", prose(20),
              prose(10) + "\n" + sentence(3), prose(6) + "\n" + "Buy cheap pills now today. " * 30]
    arrow = pa.array(texts)
    together = text_verdict(arrow, check_filters({name: {} for name in order}, FEATURES))
    expected_rule, expected_value = [None] * len(texts), np.full(len(texts), np.nan)
    for name in reversed(order):
        alone = text_verdict(arrow, check_filters({name: {}}, FEATURES))
        for i in np.flatnonzero(~alone.keep).tolist():
            expected_rule[i], expected_value[i] = alone.names[alone.rule[i]], alone.value[i]
    assert [together.names[r] if r >= 0 else None for r in together.rule.tolist()] == expected_rule
    np.testing.assert_array_equal(together.value, expected_value)
    assert len({r.split(".")[0] for r in expected_rule if r}) == 4  # each set is the first to fail some


def test_filtering_and_dedup_never_import_pandas(tmp_path: Path) -> None:
    """Fixed cost: a worker's stage with every rule set, bounds, --keep-filtered and both dedup methods, over a
    batch with a null, empty, Chinese and English texts, imports no pandas (pyarrow's conversions would: ~0.4 s
    and ~40 MB a process)."""
    pipeline = tmp_path / "p.toml"
    pipeline.write_text(f"[tokenizer]\npath = {json.dumps(str(GPT2))}\n[filter]\nkeep_filtered = true\n"
                        "drop_empty = false\n" + "".join(f"[filter.{name}]\n" for name in RULE_SETS) +
                        "[filter.bounds]\nnum_tokens = {min = 3}\n[dedup]\nexact = true\nnear = true\n")
    code = """if True:
        import sys
        import numpy as np, pyarrow as pa
        from prep.config import load_pipeline
        from prep.core.stage import Stage
        from prep.text.arrow import binary_array
        texts = [b"The cat sat. " * 40, b"", b"", "\\u4e2d\\u6587".encode() * 50, b"A line.\\n\\nA [1] line"]
        valid = pa.py_buffer(np.packbits(np.array([1, 1, 0, 1, 1], bool), bitorder="little"))
        text = pa.Array.from_buffers(pa.string(), 5, [valid, *binary_array(texts, pa.string()).buffers()[1:]], 1)
        ids = binary_array([b"a", b"b", b"c", b"d", b"e"], pa.string())
        out, stats = Stage(load_pipeline(sys.argv[1]))(pa.RecordBatch.from_arrays([ids, text], ["id", "text"]))
        print(out.num_rows, stats.filtered, "pandas" in sys.modules)
    """
    proc = subprocess.run([sys.executable, "-c", code, str(pipeline)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.stdout.split() == ["1", "4", "False"], proc.stderr


def run_filtered(tmp_path: Path, inp: Path, name: str, *extra: str) -> Path:
    out = tmp_path / name
    prep_cmd(*filtered_args(filtered_pipeline(tmp_path), inp, out), *extra, check=True)
    return out


FLAGS = ("--no-progress", "--chunk-bytes", "16KiB", "--shard-bytes", "48KiB")  # several shards of a small corpus


def filtered_args(pipeline: Path, inp: Path, out: Path) -> list:
    return ["run", pipeline, "-i", inp, "-o", out, *FLAGS]


def filtered_pipeline(tmp_path: Path) -> Path:
    """pipelines/fineweb-like.toml with this checkout's tokenizer, two kept features and two more bounds."""
    pipeline = tmp_path / "fw.toml"
    if not pipeline.exists():
        text = (ROOT / "pipelines" / "fineweb-like.toml").read_text()
        pipeline.write_text(text.replace('"../../shared/tokenizers/gpt2.tokenizer.json"', json.dumps(str(GPT2)))
                            .replace('compute = ["all"]', 'compute = ["num_chars", "frac_cjk"]')
                            .replace("num_tokens = {min = 32}", "num_tokens = {min = 100}\nfrac_digit = {max = 0.2}"))
    return pipeline


def test_run_accounts_for_every_document_and_is_deterministic(tmp_path: Path, mixed_corpus: Path) -> None:
    out = run_filtered(tmp_path, mixed_corpus, "w1", "--workers", "1", "--keep-filtered")
    manifest = json.loads((out / "_manifest.json").read_text())
    counts = manifest["counts"]
    assert counts["documents_in"] == counts["documents_out"] + counts["quarantined"] + counts["filtered"]
    assert sum(counts["filtered_by"].values()) == counts["filtered"] > 0
    assert counts["filter_skipped"]["gopher_quality"] >= 400  # the Chinese poems
    filtered = pq.read_table(out / "_filtered.parquet")
    assert filtered.column_names == ["id", "rule", "value", "threshold"]
    assert filtered.num_rows == counts["filtered"]
    by_rule = {r: filtered.column("rule").to_pylist().count(r) for r in set(filtered.column("rule").to_pylist())}
    assert by_rule == counts["filtered_by"]
    bounds = filtered.filter(pa.compute.equal(filtered.column("rule"), "bounds.num_tokens.min")).to_pylist()
    assert bounds and all(r["value"] < 100 and r["threshold"] == 100 for r in bounds)
    # written ids = input ids minus the filtered ids, in input order
    input_ids = []
    for f in sorted(mixed_corpus.glob("*.jsonl")):
        input_ids += [json.loads(line)["id"] for line in f.read_text().splitlines()]
    written = pq.read_table(out, columns=["id", "num_tokens"])
    gone = set(filtered.column("id").to_pylist())
    assert written.column("id").to_pylist() == [i for i in input_ids if i not in gone]
    assert min(written.column("num_tokens").to_pylist()) >= 100
    schema = pq.read_schema(next(out.glob("part-*.parquet")))
    assert "frac_digit" not in schema.names and "num_chars" in schema.names  # a bound's feature is not kept
    out3 = run_filtered(tmp_path, mixed_corpus, "w3", "--workers", "3", "--router", "random", "--seed", "7",
                        "--keep-filtered")
    assert shard_bytes_of(out) == shard_bytes_of(out3)
    assert (out / "_filtered.parquet").read_bytes() == (out3 / "_filtered.parquet").read_bytes()
    assert len(list(out.glob("part-*.parquet"))) >= 3
    top_rule = max(counts["filtered_by"], key=counts["filtered_by"].get)
    assert top_rule in prep_cmd("inspect", out, check=True).stdout
    prep_cmd("report", out, check=True)
    page = (out / "report.html").read_text()
    assert f"{top_rule}</td><td>{counts['filtered_by'][top_rule]:,}</td>" in page


@pytest.mark.slow
def test_ray_engine_filters_the_same(tmp_path: Path, mixed_corpus: Path) -> None:
    local = run_filtered(tmp_path, mixed_corpus, "local", "--workers", "2", "--keep-filtered")
    ray = run_filtered(tmp_path, mixed_corpus, "ray", "--workers", "2", "--keep-filtered", "--engine", "ray")
    assert shard_bytes_of(ray) == shard_bytes_of(local)
    assert (ray / "_filtered.parquet").read_bytes() == (local / "_filtered.parquet").read_bytes()
    counts = [json.loads((o / "_manifest.json").read_text())["counts"] for o in (local, ray)]
    assert counts[0] == counts[1] and counts[0]["filtered_by"]


def test_resume_after_a_kill_keeps_the_filtered_documents(tmp_path: Path, mixed_corpus: Path) -> None:
    """--keep-filtered across a crash: the whole run is killed (SIGKILL, every process) once a shard that
    filtered documents is committed, then resumed. The filtered rows of the committed shards come from what
    the killed run recorded, the others from the resumed run; together they equal an uninterrupted run's."""
    from test_faults import Run

    whole = run_filtered(tmp_path, mixed_corpus, "whole", "--workers", "2", "--keep-filtered")
    total = len(list(whole.glob("part-*.parquet")))
    out = tmp_path / "killed"
    pipeline = filtered_pipeline(tmp_path)
    slow = ("--debug-slow-worker", "0:4", "--debug-slow-worker", "1:4")  # a run long enough to kill in its middle
    run = Run(mixed_corpus, out, *slow, args=(str(pipeline), *FLAGS, "--keep-filtered"))
    try:
        run.wait_for(lambda: any(e.get("file") and e["filtered_bytes"] for e in run.committed_entries()))
    finally:
        os.killpg(run.proc.pid, signal.SIGKILL)
        run.proc.wait()
    committed = [e for e in run.committed_entries() if e.get("file")]
    assert 1 <= len(committed) < total  # killed mid-run, after a shard with filtered documents
    assert not (out / "_manifest.json").exists() and not (out / "_filtered.parquet").exists()
    partial = (out / "_filtered.jsonl.partial").read_bytes()[: committed[-1]["filtered_bytes"]]
    recorded = [json.loads(line)["id"] for line in partial.decode().splitlines()]
    prep_cmd(*filtered_args(pipeline, mixed_corpus, out), "--workers", "2", "--keep-filtered", "--resume",
             check=True)
    assert shard_bytes_of(out) == shard_bytes_of(whole)
    assert (out / "_filtered.parquet").read_bytes() == (whole / "_filtered.parquet").read_bytes()
    filtered_ids = pq.read_table(out / "_filtered.parquet").column("id").to_pylist()
    assert filtered_ids[: len(recorded)] == recorded  # the committed part, as the killed run recorded it
    counts = [json.loads((o / "_manifest.json").read_text())["counts"] for o in (out, whole)]
    assert counts[0] == counts[1] and counts[0]["filtered"] == len(filtered_ids)


def test_resume_refused_when_filters_differ(tmp_path: Path) -> None:
    from prep.io.output import check_resumable

    a, b = tmp_path / "a.toml", tmp_path / "b.toml"
    a.write_text("[filter.fineweb]\n")
    b.write_text("[filter.fineweb]\nmax_short_lines = 0.5\n")
    old, new = load_pipeline(a), load_pipeline(b)
    recorded = {"config": old.output_fingerprint(), "inputs": [], "tokenizer_sha256": "x"}
    fingerprint = {"config": new.output_fingerprint(), "inputs": [], "tokenizer_sha256": "x"}
    with pytest.raises(UserError, match=r"different pipeline \(filters\)"):
        check_resumable(tmp_path, recorded, fingerprint)
    check_resumable(tmp_path, recorded, dict(fingerprint, config=old.output_fingerprint()))


@pytest.mark.slow
@pytest.mark.parametrize("name", list(RULE_SETS))
def test_agrees_with_datatrove_on_the_english_corpus(name: str) -> None:
    """datatrove's own filter (English words by spaCy's blank tokenizer: nothing is downloaded) against
    ours, keep/drop per document, on every third document of every English file of the shared corpus (the
    documents and datatrove's decisions as scripts/word_split_agreement.py takes them)."""
    datatrove = load_script("word_split_agreement")
    texts = datatrove.english_docs(3)
    ours = text_verdict(pa.array(texts, pa.large_string()), check_filters({name: {}}, FEATURES)).keep
    kept = datatrove.decisions(texts, (name,))[name]
    agreement = float((kept == ours).mean())
    assert agreement >= 0.98, f"{name}: {agreement:.4f} of {len(texts)} documents"
    assert 0.02 < kept.mean() < 0.98  # the rules do decide something on this corpus


def test_the_empty_rule_agrees_with_arrows_trim_on_every_code_point_and_random_batches():
    """`blank` skips Arrow's trim for texts whose first byte cannot begin whitespace; it must judge every text as
    the trim does: each code point alone and before a space or a letter, then random mixes of whitespace, controls
    and letters, with nulls, both string types and sliced arrays."""
    import random

    import pyarrow.compute as pc

    from prep.text.arrow import numpy_of
    from prep.text.filters import blank

    def trimmed_empty(texts: pa.Array) -> np.ndarray:
        return numpy_of(pc.utf8_length(pc.utf8_trim_whitespace(texts)), fill=0) == 0

    every = [chr(c) for c in range(0x110000) if not 0xD800 <= c < 0xE000]
    for after in ("", " ", "x"):
        texts = pa.array([c + after for c in every])
        assert (blank(texts) == trimmed_empty(texts)).all(), after
    assert blank(pa.array([" \u3000\n", "\u00a0x", "中", None, ""])).tolist() == [True, False, False, True, True]
    alphabet = [" ", "\t", "\n", "\r", "\u00a0", "\u3000", "\u2028", "\u1680", "\u180e", "\ufeff", "\x1c", "\x85",
                "a", "é", "中", "\x00", "\x7f", "!", "\v", "\u200b", "\u205f"]
    rng = random.Random(7)
    for _ in range(500):
        n = rng.randint(0, 20)
        texts = [None if rng.random() < 0.05 else "".join(rng.choices(alphabet, k=rng.randint(0, 4))) for _ in range(n)]
        for type_ in (pa.string(), pa.large_string()):
            array = pa.array(texts, type_)
            array = array.slice(1, n - 2) if n > 2 else array
            assert (blank(array) == trimmed_empty(array)).all(), texts


def test_the_rules_class_table_comes_from_the_cache_and_equals_a_fresh_build(tmp_path, monkeypatch):
    """The rules' lookup table is kept in prep's cache directory (building it cost each worker ~0.07 s): the cached
    one must be the table a fresh build gives, a damaged file is built again, and the bits agree with Python's
    and Arrow's own classes."""
    import pyarrow.compute as pc

    from prep.text import _codes, features, filters

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    filters._classes.cache_clear()
    class_ids, masks = features._char_classes()
    fresh = filters._build_classes(masks[class_ids])
    assert np.array_equal(filters._classes(), fresh)
    (cached,) = (tmp_path / "prep").glob("filter-classes-*.npy")
    assert np.array_equal(np.load(cached), fresh)
    filters._classes.cache_clear()
    assert np.array_equal(filters._classes(), fresh)  # read back
    cached.write_bytes(b"not a numpy file")
    filters._classes.cache_clear()
    assert np.array_equal(filters._classes(), fresh)
    chars = "a5 .$。«\n中"
    regex_punct = pc.match_substring_regex(pa.array(list(chars)), r"^\pP$").to_pylist()
    for ch, is_punct in zip(chars, regex_punct, strict=True):
        bits = fresh[ord(ch)]
        assert bool(bits & _codes.SPACE) == ch.isspace()
        assert bool(bits & _codes.ALPHA) == ch.isalpha()
        assert bool(bits & _codes.UNICODE_PUNCT) == is_punct
        assert bool(bits & _codes.TERMINAL) == (ch in filters.TERMINAL_PUNCTUATION)
