"""prep.text.features against straightforward pure-Python definitions, document by document."""

from __future__ import annotations

import gzip
import itertools
import json
import os
import sys
import unicodedata
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import xxhash

from prep.errors import UserError
from prep.text.features import FEATURE_TYPES, FEATURES, check_feature_names, compute_features

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"
ALL = list(FEATURES)

HAND_MADE = [
    "The quick brown fox jumps over the lazy dog. 1, 2, 3!",
    "Hello World  hello world\tHELLO",
    "中文测试，一二三。 數據： ＡＢＣ　１２３ 𠀀𪚥 豈",  # CJK, full-width, ideographic space, ext B, compat.
    'def f(x):\n    return {"a": x ** 2}  # $ + < = > ^ ` | ~\n\n\tpass\n',
    "family: 👨\u200d👩\u200d👧 flag: 🇯🇵 heart: ❤\ufe0f",  # ZWJ sequence, regional indicators, VS16
    "e\u0301 A\u030a cafe\u0301 ǅ Ⅻ ² 𝟎𝟗 𝐀𝐳 𐌰",  # combining marks, Lt, Nl, No, 4-byte Nd/Lu/Ll/Lo
    "nul\x00in\x00 the\x00middle\x00",
    "",
    None,
    "   \t\n  \n",
    "\n",
    "\n\n",
    "a",
    "a\n",
    "a\n\nb",
    "line one\r\nline two\r\nline one\r\n\r\n\r\n",
    "a\r\r\nb\ra\r\n",
    "x\ny\nx\nx\n\n\n y\n",
    "same\nsame\nsame\nsame",
    "the cat sat on the cat sat on the cat sat on the mat",
    "a a a a a a",
    "aaa b aaa b c d c d",
    "c d c d aaa b aaa b",
    "to be or not to be to be or not to be that is",
    "x\x1cy\x1dz\x1e\x1fw\x0bv\x0cu\x85t\xa0s\u1680r\u2000q\u2028p\u2029o\u202fn\u205fm\u3000l\u200bk",
    "¿Qué? ¡Sí! «quotes» — dash… ‘single’ “double” 《书名》 【括号】",
    "unassigned \u0378 \U000e0080 private \ue000 \U0010fffd",
    "tab\tseparated\tvalues\t1\t2\t3\nand\tmore",
    "🙂" * 5 + " " + "🙂" * 5,
]


def reference(text: str | None, ids: list[int] | None) -> dict[str, object]:
    """Every feature of one document, computed the obvious way."""
    text, ids = text or "", ids or []
    words = text.split()
    pieces = text.split("\n")
    lines = pieces[:-1] if pieces[-1] == "" else pieces
    seen: set[str] = set()
    non_empty = duplicates = 0
    for line in (piece.rstrip("\r") for piece in lines):
        if line:
            non_empty += 1
            duplicates += line in seen
            seen.add(line)
    word_chars = sum(len(word) for word in words)

    def ratio(num: float, den: float) -> float:
        return num / den if den else 0.0

    def frac(predicate) -> float:
        return ratio(sum(1 for c in text if predicate(c)), len(text))

    def cjk(c: str) -> bool:
        return unicodedata.name(c, "").startswith(("CJK UNIFIED IDEOGRAPH", "CJK COMPATIBILITY IDEOGRAPH"))

    def top_ngram(n: int) -> float:
        grams = Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))
        if not grams:
            return 0.0
        gram, count = grams.most_common(1)[0]  # ties: the first inserted, i.e. the first to occur
        return 0.0 if count == 1 else count * sum(len(w) for w in gram) / word_chars

    normalised = " ".join(text.split()).encode()
    return {
        "num_bytes": len(text.encode()),
        "num_chars": len(text),
        "num_words": len(words),
        "num_lines": len(lines),
        "num_tokens": len(ids),
        "chars_per_token": ratio(len(text), len(ids)),
        "mean_word_length": ratio(word_chars, len(words)),
        "frac_alpha": frac(str.isalpha),
        "frac_digit": frac(str.isdecimal),
        "frac_upper": frac(lambda c: unicodedata.category(c) == "Lu"),
        "frac_whitespace": frac(str.isspace),
        "frac_punct": frac(lambda c: unicodedata.category(c).startswith("P")),
        "frac_non_ascii": frac(lambda c: ord(c) > 127),
        "frac_cjk": frac(cjk),
        "frac_dup_lines": ratio(duplicates, non_empty),
        "top_2gram_frac": top_ngram(2),
        "top_3gram_frac": top_ngram(3),
        "top_4gram_frac": top_ngram(4),
        "unique_token_ratio": ratio(len(set(ids)), len(ids)),
        "content_hash": xxhash.xxh3_64_intdigest(normalised),
    }


def code_point_ids(texts: list[str | None]) -> list[list[int] | None]:
    """Stand-in token ids: the code points (null stays null), so unique_token_ratio has a reference."""
    return [None if t is None else [ord(c) for c in t] for t in texts]


def arrays(texts, ids, large: bool = False) -> tuple[pa.Array, pa.Array]:
    string, lists = (pa.large_string(), pa.large_list) if large else (pa.string(), pa.list_)
    return pa.array(texts, string), pa.array(ids, lists(pa.uint32()))


def assert_matches_reference(texts: list[str | None], ids: list[list[int] | None], got: dict) -> None:
    assert list(got) == ALL
    expected = [reference(t, i) for t, i in zip(texts, ids, strict=True)]
    for name, column in got.items():
        assert column.type == FEATURE_TYPES[name] and len(column) == len(texts) and column.null_count == 0
        want = np.array([e[name] for e in expected], FEATURE_TYPES[name].to_pandas_dtype())
        bad = np.flatnonzero(column.to_numpy() != want)
        assert not len(bad), (
            f"{name} of document {bad[0]} {texts[bad[0]]!r:.80}: got {column[bad[0]]}, want {want[bad[0]]}"
        )


def test_hand_made_texts_match_reference():
    ids = code_point_ids(HAND_MADE)
    assert_matches_reference(HAND_MADE, ids, compute_features(*arrays(HAND_MADE, ids), ALL))


@pytest.fixture(scope="module")
def corpus_documents() -> list[str]:
    """About 200 real documents: the first 34 of six files (English, Chinese, code), cut to 6000 chars."""
    texts = []
    files = ("en_fortunes", "en_jargon_file", "zh_poetry", "zh_fortunes", "zh_wiki_cmrc2018", "code_js_npm")
    for name in files:
        with gzip.open(CORPUS / f"{name}.jsonl.gz", "rt", encoding="utf-8") as f:
            texts += [json.loads(line)["text"][:6000] for line in itertools.islice(f, 34)]
    return texts


def test_corpus_documents_match_reference(corpus_documents):
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(CORPUS.parent / "tokenizers" / "gpt2.tokenizer.json"))
    ids = [e.ids for e in tokenizer.encode_batch(corpus_documents)]
    got = compute_features(*arrays(corpus_documents, ids), ALL)
    assert_matches_reference(corpus_documents, ids, got)
    assert 0 < np.mean(got["frac_cjk"].to_numpy()) < 0.5  # the sample really mixes scripts


def test_every_assigned_code_point_matches_reference():
    """Decoding and classes of every assigned code point (1-4 UTF-8 bytes), cut into texts of 997."""
    chars = [chr(c) for c in range(sys.maxunicode + 1) if unicodedata.category(chr(c)) not in ("Cn", "Cs")]
    texts = ["".join(chars[i : i + 997]) for i in range(0, len(chars), 997)]
    ids = code_point_ids(texts)
    assert_matches_reference(texts, ids, compute_features(*arrays(texts, ids), ALL))


@pytest.mark.parametrize("large", [False, True])
@pytest.mark.parametrize(
    ("start", "stop"), [(3, 11), (0, 1), (7, 9), (len(HAND_MADE) - 4, len(HAND_MADE)), (5, 5)]
)
def test_sliced_and_large_arrays(large, start, stop):
    ids = code_point_ids(HAND_MADE)
    texts_array, ids_array = arrays(HAND_MADE, ids, large)
    got = compute_features(texts_array.slice(start, stop - start), ids_array.slice(start, stop - start), ALL)
    assert_matches_reference(HAND_MADE[start:stop], ids[start:stop], got)


def test_a_document_features_do_not_depend_on_the_batch(corpus_documents):
    texts = HAND_MADE + corpus_documents[::5]
    ids = code_point_ids(texts)
    whole = compute_features(*arrays(texts, ids), ALL)
    assert compute_features(*arrays(texts, ids), ALL) == whole  # deterministic, bit for bit
    alone = [compute_features(*arrays([t], [i]), ALL) for t, i in zip(texts, ids, strict=True)]
    for name in ALL:
        assert pa.concat_arrays([one[name] for one in alone]).equals(whole[name]), name


def test_words_and_lines_are_grouped_by_their_bytes_not_only_by_their_hashes():
    """Equal hashes of different long strings (here every hash is masked to 0) must still give different ids;
    strings of at most 7 bytes are keyed by their bytes."""
    from prep.text import _feature_kernel as kernel

    words = [b"abcdefgh1", b"abcdefgh2", b"abcdefgh1", b"abcdefgh", b"abcdefgh2", b"abc", b"abd", b"abc", b"ab\x00",
             b"ab"]
    data = np.frombuffer(b"".join(words), np.uint8)
    ends = np.cumsum([len(w) for w in words]).astype(np.int32)
    starts = np.concatenate(([0], ends[:-1])).astype(np.int32)
    n = len(words)
    table_keys, table_ids, first, ids, counts = (np.empty(32, np.int64), np.empty(32, np.int32), np.empty(n, np.int32),
                                                 np.empty(n, np.int32), np.empty(n, np.int32))
    for mask in (np.uint64(0), np.uint64(2**64 - 1)):
        keys = np.array([kernel._key(data, a, e, mask) for a, e in zip(starts, ends, strict=True)])
        assert len(set(keys[:5].tolist())) == (1 if mask == 0 else 3)
        assert kernel._exact_ids(data, starts, ends, keys, n, table_keys, table_ids, first, ids, counts) == 7
        assert ids.tolist() == [0, 1, 0, 2, 1, 3, 4, 3, 5, 6]
        assert counts[:7].tolist() == [2, 2, 1, 2, 1, 1, 1]


def test_long_words_alike_at_both_ends_get_different_keys():
    """A word's key stands for all its bytes (URLs that differ only in the middle are not one key), so that a text
    of many such words is not compared pair by pair."""
    from prep.text import _feature_kernel as kernel

    words = [f"http://a.example/{i:06d}/index.html".encode() for i in range(50)] + [b"abcdefgh12345678", b"abcdefgh"]
    text = np.frombuffer(b" ".join(words), np.uint8)
    ends = np.cumsum([len(w) + 1 for w in words]).astype(np.int32) - 1
    starts = (ends - np.array([len(w) for w in words])).astype(np.int32)
    keys = np.empty(len(words), np.int64)
    kernel._word_keys(text, starts, ends, len(words), keys)
    assert len(set(keys.tolist())) == len(words)
    assert keys.tolist() == [kernel._key(text, a, e) if e - a > 16 else keys[i]
                             for i, (a, e) in enumerate(zip(starts, ends, strict=True))]


def test_the_lead_bytes_of_whitespace_beyond_ascii_are_all_known():
    """The empty rule (`prep.text.filters.blank`) decides by a text's first byte unless it may start whitespace."""
    import sys as _sys

    from prep.text._codes import SPACE_LEADS

    leads = {chr(cp).encode()[0] for cp in range(0x80, _sys.maxunicode + 1) if chr(cp).isspace()}
    assert leads == set(SPACE_LEADS)


def test_unique_token_ratio_with_a_vocabulary_too_large_for_an_array():
    ids = [[5, 2**30, 5, 2**31 + 7], [2**31 + 7], [], [3, 3, 3]]
    got = compute_features(*arrays(["a", "b", "c", "d"], ids), ["unique_token_ratio"])["unique_token_ratio"]
    assert got.to_pylist() == pytest.approx([3 / 4, 1.0, 0.0, 1 / 3])


def test_huge_token_ids():
    ids = [[2**32 - 1, 0, 2**32 - 1], [7, 7], [2**32 - 2]]
    got = compute_features(*arrays(["a", "b", "c"], ids), ["unique_token_ratio", "num_tokens"])
    assert got["unique_token_ratio"].to_pylist() == pytest.approx([2 / 3, 1 / 2, 1.0])
    assert got["num_tokens"].to_pylist() == [3, 2, 1]


def test_definitions_on_small_examples():
    lines = ["", "a", "a\n", "\n", "a\n\nb", "a\r\nb"]
    ngrams = ["aaa b aaa b c d c d", "c d c d aaa b aaa b", "b a a b"]
    cjk = ["\U00031350\U0002ebf0ab"]  # extensions H and I count by block, whatever Python's Unicode version
    texts = lines + ngrams + cjk
    names = ["num_lines", "top_2gram_frac", "frac_cjk", "num_tokens"]
    got = {
        name: a.to_pylist() for name, a in compute_features(*arrays(texts, [[]] * len(texts)), names).items()
    }
    assert got["num_lines"][: len(lines)] == [0, 1, 1, 1, 3, 2]
    # ties between equally frequent 2-grams go to the first to occur; all-distinct 2-grams give 0
    assert got["top_2gram_frac"][len(lines) : -1] == pytest.approx([8 / 12, 4 / 12, 0.0])
    assert got["frac_cjk"][-1] == 0.5
    assert got["num_tokens"] == [0] * len(texts)


def test_content_hash():
    same = ["hello world", " hello \t\n world ", "hello\u3000world\xa0", "hello  world"]
    texts = [*same, "helloworld", "Hello world"]
    hashes = compute_features(*arrays(texts, [[]] * len(texts)), ["content_hash"])["content_hash"].to_pylist()
    assert hashes[0] == 15296390279056496779  # XXH3-64 of b"hello world" (seed 0)
    assert hashes[: len(same)] == [hashes[0]] * len(same)
    assert len(set(hashes[3:])) == 3


def test_content_hash_is_the_librarys_xxh3_at_every_length():
    """Short texts are hashed by prep's compiled XXH3 (up to 240 bytes), longer ones by the library: both must be
    `xxhash.xxh3_64_intdigest` of the normalised text, for every length of XXH3's paths and past them, with bytes
    of every value (random multilingual words)."""
    import random

    rng = random.Random(3)
    alphabet = ["a", "Z", "é", "中", "😀", "\x00", "\x7f", "ÿ", "-", ".", " "]
    texts = []
    for length in [*range(0, 260), 511, 1024, 4099]:
        normalised = ""
        while len(normalised.encode()) < length:  # one space between words, none at the ends, `length` bytes
            c = rng.choice(alphabet)
            if len((normalised + c).encode()) > length or (c == " " and normalised[-1:] in ("", " ")):
                c = "a"
            normalised += c if len(normalised.encode()) + 1 < length or c != " " else "a"
        texts.append(("\n " if length % 3 else "") + normalised.replace(" ", "  \t"))
    hashes = compute_features(*arrays(texts, [[]] * len(texts)), ["content_hash"])["content_hash"].to_pylist()
    assert hashes == [xxhash.xxh3_64_intdigest(" ".join(t.split()).encode()) for t in texts]
    assert {len(" ".join(t.split()).encode()) for t in texts} >= set(range(0, 241))  # every short length, hit


def test_names_order_types_and_empty_batch():
    names = ["content_hash", "num_words", "frac_cjk", "num_words"]
    got = compute_features(*arrays(["a b"], [[1]]), names)
    assert list(got) == ["content_hash", "num_words", "frac_cjk"]
    empty = compute_features(*arrays([], []), ALL)
    assert [(name, len(a), a.type) for name, a in empty.items()] == [(n, 0, FEATURE_TYPES[n]) for n in ALL]


def test_unknown_feature_is_a_user_error():
    assert check_feature_names(["num_bytes", "frac_cjk", "num_bytes"]) == ["num_bytes", "frac_cjk"]
    with pytest.raises(UserError, match=r"unknown feature 'num_byte'; known: num_bytes, num_chars"):
        check_feature_names(["num_bytes", "num_byte"])
    with pytest.raises(UserError, match="unknown feature 'nope'"):
        compute_features(*arrays(["a"], [[1]]), ["nope"])


def test_every_feature_has_a_one_line_definition():
    assert list(FEATURE_TYPES) == ALL and len(ALL) == 20
    assert all(d and "\n" not in d and "|" not in d for d in FEATURES.values())


def test_readme_feature_table_is_the_code_s_definitions():
    """One definition per feature: the README's table is generated from prep.text.features.FEATURES."""
    from conftest import ROOT, load_script

    module = load_script("feature_table")
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert module.table() in readme, "README's feature table differs: run python scripts/feature_table.py"
    for name in FEATURES:
        assert readme.count(f"| `{name}` |") == 1


@pytest.fixture(scope="module")
def huge_document() -> str:
    """About 2.4 MB: English, Chinese and code, CRLF and ideographic spaces, and repeated lines and n-grams."""
    parts = []
    for name in ("en_fortunes", "zh_wiki_cmrc2018", "code_js_npm"):
        with gzip.open(CORPUS / f"{name}.jsonl.gz", "rt", encoding="utf-8") as f:
            parts += [json.loads(line)["text"] for line in itertools.islice(f, 150)]
    text = "\r\n".join(parts) + "\u3000".join(HAND_MADE[:6])
    return (text * (1_600_000 // len(text) + 1))[:1_600_000]


def test_a_huge_document_between_small_ones_matches_reference(huge_document):
    """The kernel's scratch space is sized by the longest text of the batch and reused for the others."""
    texts = ["a b a b", huge_document, "", "x y x y"]
    ids = code_point_ids(texts)
    got = compute_features(*arrays(texts, ids), ALL)
    assert_matches_reference(texts, ids, got)
    assert len(huge_document.encode()) > 2 << 20
    assert got["top_4gram_frac"][1].as_py() > 0 and got["frac_cjk"][1].as_py() > 0.1


def test_memory_for_one_huge_document_is_a_few_times_its_size():
    """Peak RSS growth of compute_features (all features) on one 8 MB document, in a fresh process:
    a few times the document (9.3 for this English text with the compiled pass: 32 bytes a word, ~5.8 per byte; the
    normalised text for content_hash, 1; lines at 24 bytes and a hash table of 12 bytes a slot, the rest).
    VmHWM, not ru_maxrss: the latter keeps the peak of the parent (pytest) across exec. glibc's mmap threshold is
    fixed, so that the peak does not depend on what earlier code left free in the heap: with the dynamic threshold,
    memory freed by the start's own work was reused and hid ~2 bytes per byte of the features' need."""
    import subprocess

    code = f"""
import gzip, itertools, json
import numpy as np, pyarrow as pa
from prep.text.features import FEATURES, compute_features, prepare
with gzip.open({str(CORPUS / "en_fortunes.jsonl.gz")!r}, "rt", encoding="utf-8") as f:
    base = "\\n".join(json.loads(line)["text"] for line in itertools.islice(f, 2000))
size = 8_000_000
texts = pa.array([(base * (size // len(base) + 1))[:size]])
ids = pa.array([np.arange(size // 4, dtype=np.uint32) % 50257], pa.list_(pa.uint32()))
prepare()
compute_features(pa.array(["a b"]), pa.array([[1]], pa.list_(pa.uint32())), list(FEATURES))  # loads (or compiles)
# the compiled pass: its peak is not the features' own
open("/proc/self/clear_refs", "w").write("5")  # resets VmHWM to the current RSS
before = int(open("/proc/self/statm").read().split()[1]) * 4096
compute_features(texts, ids, list(FEATURES))
peak = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:")) * 1024
print((peak - before) / size)
"""
    env = os.environ | {"MALLOC_MMAP_THRESHOLD_": str(1 << 16)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert float(out.stdout) <= 10.0, out.stdout


def test_code_point_classes_come_from_the_cache_and_equal_a_fresh_computation(tmp_path, monkeypatch):
    """The Unicode class table is kept in prep's cache directory: the cached one must be the table itself, and a
    damaged cache file is computed again, not trusted."""
    import unicodedata

    from prep.text import features

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    fresh = features._code_point_bits()
    (cached,) = (tmp_path / "prep").glob("code-point-classes-*.npy")
    assert np.array_equal(np.load(cached), fresh)
    assert np.array_equal(features._code_point_bits(), fresh)
    # independent spot checks of the bits, from the Unicode database itself
    for ch in "aZ5 \t。中é!":
        c = ord(ch)
        assert bool(fresh[c] & features._SPACE) == ch.isspace()
        assert bool(fresh[c] & features._NON_ASCII) == (c >= 0x80)
        assert bool(fresh[c] & features._DIGIT) == (unicodedata.category(ch) == "Nd")
    cached.write_bytes(b"not a numpy file")
    assert np.array_equal(features._code_point_bits(), fresh)


def test_writable_and_read_only_batches_share_one_compiled_pass():
    """Arrow hands over buffers writable (parsed JSON) or not (built from bytes): the compiled pass must not be
    compiled, or loaded, a second time for the other kind on a worker's first real batch."""
    import io

    import pyarrow.json as pajson

    from prep.text import _feature_kernel as kernel
    from prep.text.arrow import binary_array

    parsed = pajson.read_json(io.BytesIO(b'{"text": "a b a b"}\n{"text": "c"}\n')).column("text").combine_chunks()
    from_bytes = binary_array([b"a b a b", b"c"], pa.string())  # over a Python bytes object: read-only
    for texts in (parsed, from_bytes):
        compute_features(texts, pa.array([[1], [2]], pa.list_(pa.uint32())), ALL)
    assert len(kernel.text_stats.signatures) == 1, kernel.text_stats.signatures


def test_only_pipelines_that_run_compiled_code_load_it(monkeypatch):
    """The forkserver loads numba and the compiled features only for a pipeline that computes them: num_tokens
    and num_bytes alone need none, and neither does a bound on them; any other feature, bound or exact dedup does.
    The rules' compiled loop is loaded for a pipeline with a rule set, and only then."""
    from multiprocessing import forkserver

    from prep.config import PipelineConfig
    from prep.engines.local import forkserver as prep_forkserver

    def config(features, filters=None):
        return PipelineConfig(features=features, filters=filters or {})

    assert config(["none"]).compiled_code() == ()
    assert config(["num_tokens", "num_bytes"], {"bounds": {"num_tokens": {"min": 3}}}).compiled_code() == ()
    assert config(["all"]).compiled_code() == ("features",)
    assert config(["num_chars"]).compiled_code() == ("features",)
    assert config(["none"], {"bounds": {"frac_alpha": {"min": 0.5}}}).compiled_code() == ("features",)
    assert config(["none"], {"c4": {}}).compiled_code() == ("rules",)
    assert config(["all"], {"c4": {}, "bounds": {"num_tokens": {"min": 3}}}).compiled_code() == ("features", "rules")
    assert PipelineConfig(features=["none"], dedup_exact=True).compiled_code() == ("features",)

    told = []  # what each forkserver started finds in its environment, and would load
    monkeypatch.setenv(prep_forkserver.CHOICE_ENV, "")
    monkeypatch.setattr(forkserver, "ensure_running", lambda: told.append(prep_forkserver.await_choice()))
    monkeypatch.setattr(prep_forkserver, "forkserver_alive", lambda: False)  # every call starts one
    monkeypatch.setattr(prep_forkserver, "_compiled", [("features",)])
    prep_forkserver.start_forkserver(())
    prep_forkserver.start_forkserver()  # a restart (the forkserver died) keeps the first choice
    prep_forkserver.start_forkserver(("features", "rules"))
    assert told == [(), (), ("features", "rules")]
    assert [prep_forkserver.PRELOAD_COMPILED[part] for part in ("features", "rules")] == [
        "prep.engines.local.preload_features", "prep.engines.local.preload_rules"]


def test_a_cached_kernel_loads_without_numbas_refresh_and_a_missed_one_compiles(tmp_path):
    """prep.text._numba: a kernel loaded from numba's cache skips the refresh of numba's target context (~0.12 s
    of every run's start: ~40 more modules, among them its linear algebra, and the probes of scipy's BLAS and
    cffi); a kernel not in the cache still compiles (numba refreshes for that), and both compute. scipy and yaml,
    kept out of numba's import, stay importable. Run twice in fresh processes: the first compiles, the second
    loads what the first saved."""
    import subprocess

    (tmp_path / "kernel.py").write_text(
        "from prep.text._numba import njit\n"
        "@njit(cache=True)\n"
        "def total(x):\n"
        "    s = 0\n"
        "    for v in x:\n"
        "        s += v\n"
        "    return s\n"
    )
    code = """
import sys
import numpy as np
import kernel
got = kernel.total(np.arange(10))
refreshed = "numba.np.linalg" in sys.modules
probed = [m for m in ("cffi", "scipy.linalg") if m in sys.modules]
import scipy, yaml  # still importable afterwards
print(got, refreshed, probed == [], kernel.total.stats.cache_hits.__len__())
"""
    def run() -> list[str]:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                             cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(tmp_path)})
        return out.stdout.split()

    compiled = run()
    assert [compiled[0], compiled[1], compiled[3]] == ["45", "True", "0"]  # refreshed (and probed, where installed)
    assert run() == ["45", "False", "True", "1"]  # loaded from the cache: neither refreshed nor probed


def test_numbas_import_through_prep_leaves_out_scipy_and_yaml_unless_a_numba_config_needs_it(tmp_path):
    """prep.text._numba imports numba without scipy (numba imports it only to check its version) and without yaml
    (read only for a .numba_config.yaml in the working directory); with such a file there, yaml is imported as
    numba needs it. Both stay importable afterwards."""
    import subprocess

    code = """
import sys
import prep.text._numba
print("scipy" in sys.modules, "yaml" in sys.modules)
import scipy, yaml
"""
    def run(cwd) -> list[str]:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=cwd)
        return out.stdout.split()

    assert run(tmp_path) == ["False", "False"]
    (tmp_path / ".numba_config.yaml").write_text("")
    assert run(tmp_path) == ["False", "True"]


def test_the_forkservers_compiled_preloads_load_without_numbas_optional_probes():
    """The features' and the rules' kernels, loaded from the cache as every run's forkserver loads them, compute;
    loading the rules' loop (whose code refers to numba's array functions, and so imports numba's linear algebra)
    did not import scipy.linalg for numba's BLAS probe, nor cffi (~0.2 s and ~0.04 s), which stay importable.
    Run twice: the first may compile (after an edit, or in a fresh clone)."""
    import subprocess

    code = """
import sys
import prep.engines.local.preload_features, prep.engines.local.preload_rules
from prep.text.features import compute_features
from prep.text.filters import check_filters, text_verdict
import pyarrow as pa
probed = [m for m in ("cffi", "scipy.linalg") if m in sys.modules]
got = compute_features(pa.array(["a b a"]), pa.array([[1, 2]], pa.list_(pa.uint32())), ["num_words", "top_2gram_frac"])
verdict = text_verdict(pa.array(["one two", "This is one. This is two. This is three. This is four. This is five."]),
                       check_filters({"c4": {}}, {}))
import cffi, scipy.linalg.cython_blas  # still importable afterwards
print(probed, got["num_words"].to_pylist(), verdict.keep.tolist())
"""
    for _ in range(2):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["[]", "[3]", "[False,", "True]"], out.stdout + out.stderr


def test_numpy_dtype_of_every_numeric_arrow_type():
    """prep's own type map (pyarrow 25's to_pandas_dtype imports pandas, which workers cannot)."""
    import numpy as np
    import pyarrow as pa

    from prep.text.arrow import arrow_of, numpy_dtype, numpy_of

    for name in ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", "float32", "float64"):
        type_ = getattr(pa, name)()
        assert numpy_dtype(type_) == np.dtype(name)
        values = np.arange(5).astype(name)
        assert numpy_of(arrow_of(values, type_)).tolist() == values.tolist()
    with pytest.raises(TypeError, match="not a numeric Arrow type"):
        numpy_dtype(pa.string())
