"""The tiktoken backend must give exactly tokenizers' ids, or decline with a reason."""

from __future__ import annotations

import copy
import gzip
import hashlib
import itertools
import json
import os
import pickle
import random
import subprocess
import sys
import unicodedata
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import tiktoken
from tokenizers import Tokenizer, normalizers

from prep.text import tiktoken_backend
from prep.text.tiktoken_backend import (
    BYTE_LEVEL_PATTERN,
    HARD_STRINGS,
    TiktokenBackend,
    Unsupported,
    convert,
    verify,
)

SHARED = Path("/work/shared")
TOKENIZERS = SHARED / "tokenizers"
GPT2 = TOKENIZERS / "gpt2.tokenizer.json"
QWEN2 = TOKENIZERS / "qwen2.tokenizer.reconstructed.json"
BERT = TOKENIZERS / "bert-base-chinese.tokenizer.json"

pytestmark = pytest.mark.skipif(not TOKENIZERS.is_dir(), reason="shared tokenizers not present")

EXTRA_STRINGS = [
    " " * 1000,
    "\n" * 300 + "x",
    "a" * 5000,
    "1" * 777,
    "🙂" * 300,
    "ab" * 2000,
    "x<|endoftext|>y<|endoftext|",
    "<|im_end|><|im_start|><|im_end|>",
    "<|endoftext|>" * 5,
    "  <|endoftext|>  ",
    "<|endoftext|>\u0301",
    "ＡＢＣ１２３ ｈｅｌｌｏ",
    "don't can't WON'T I'd've y'all '' ' 'll",
]


def _random_strings(n: int, seed: int = 0) -> list[str]:
    """Strings of random code points from several planes (no surrogates)."""
    rng = random.Random(seed)
    ranges = [(0x20, 0x7F), (0x80, 0x800), (0x800, 0xD800), (0xE000, 0x10000), (0x10000, 0x30000), (0xE0000, 0xE0080)]
    out = []
    for _ in range(n):
        chars = []
        for _ in range(rng.randint(1, 60)):
            lo, hi = rng.choice(ranges)
            chars.append(chr(rng.randrange(lo, hi)))
        out.append("".join(chars))
    return out


def _corpus(every: int) -> list[str]:
    """Every `every`-th document of every corpus file, in file order."""
    texts = []
    for path in sorted((SHARED / "corpus").glob("*.jsonl.gz")):
        with gzip.open(path, "rt", encoding="utf-8") as f:
            texts += [json.loads(line)["text"] for i, line in enumerate(f) if i % every == 0]
    return texts


def _reference(path: Path, texts: list[str]) -> list[list[int]]:
    """The definition of correct: tokenizers' encode(text).ids."""
    tokenizer = Tokenizer.from_file(str(path))
    return [tokenizer.encode(t).ids for t in texts]


def _split(ids: np.ndarray, offsets: np.ndarray) -> list[list[int]]:
    return [ids[a:b].tolist() for a, b in itertools.pairwise(offsets)]


def _assert_identical(path: Path, backend: TiktokenBackend, texts: list[str]) -> None:
    ids, offsets = backend.encode_batch(texts)
    got = _split(ids, offsets)
    want = _reference(path, texts)
    differing = [i for i in range(len(texts)) if got[i] != want[i]]
    assert not differing, f"{len(differing)} differ, first {texts[differing[0]][:60]!r}"


def _variant(tmp_path: Path, base: Path, edit: Callable[[dict], None], name: str = "variant.json") -> Path:
    """A copy of `base` with `edit` applied to its JSON."""
    spec = json.loads(base.read_text(encoding="utf-8"))
    edit(spec)
    path = tmp_path / name
    path.write_text(json.dumps(spec), encoding="utf-8")
    return path


@pytest.fixture(scope="module", autouse=True)
def private_cache(tmp_path_factory) -> Iterator[None]:
    """Conversions go to a cache of this module's own, not the user's."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))
        yield


@pytest.fixture(scope="module")
def sample() -> list[str]:
    texts = _corpus(90)
    assert 1900 < len(texts) < 2100
    return texts


@pytest.fixture(scope="module", params=[GPT2, QWEN2], ids=["gpt2", "qwen2"])
def converted(request) -> tuple[Path, TiktokenBackend]:
    return request.param, convert(request.param)


def test_known_ids(converted) -> None:
    """The values listed in the shared tokenizers' README."""
    path, backend = converted
    ids, offsets = backend.encode_batch(["Hello world", "你好"])
    if path == GPT2:
        assert ids[:2].tolist() == [15496, 995] and offsets[1] == 2
    else:
        assert ids.tolist() == [9707, 1879, 108386] and offsets.tolist() == [0, 2, 3]


def test_output_layout(converted) -> None:
    _, backend = converted
    ids, offsets = backend.encode_batch([])
    assert ids.dtype == np.uint32 and ids.size == 0
    assert offsets.dtype == np.int64 and offsets.tolist() == [0]
    ids, offsets = backend.encode_batch(["", "a b", "", "你好 world"])
    assert len(offsets) == 5 and offsets[0] == 0 and offsets[-1] == len(ids)
    assert (np.diff(offsets) >= 0).all() and offsets[1] == offsets[0] and offsets[3] == offsets[2]


def test_hard_strings_identical(converted) -> None:
    path, backend = converted
    _assert_identical(path, backend, [*HARD_STRINGS, *EXTRA_STRINGS, *_random_strings(300)])


def test_corpus_sample_identical(converted, sample) -> None:
    path, backend = converted
    added = [t.content for t in Tokenizer.from_file(str(path)).get_added_tokens_decoder().values()]
    assert not any(a in t for a in added for t in sample)
    # Documents holding an added token go to tokenizers, all others to tiktoken.
    spliced = [t[: len(t) // 2] + added[i % len(added)] + t[len(t) // 2 :] for i, t in enumerate(sample[:20])]
    before = backend.fallback_documents
    _assert_identical(path, backend, sample + spliced)
    assert backend.fallback_documents - before == len(spliced)


def test_lone_surrogate_raises_like_tokenizers(converted) -> None:
    path, backend = converted
    with pytest.raises(TypeError):
        Tokenizer.from_file(str(path)).encode("a\ud800b")
    with pytest.raises(TypeError):
        backend.encode_batch(["fine", "a\ud800b"])


@pytest.mark.parametrize(
    ("base", "edit", "reason"),
    [
        (BERT, lambda s: None, "model type WordPiece"),
        (GPT2, lambda s: s["model"].update(byte_fallback=True), "byte_fallback"),
        (GPT2, lambda s: s["model"].update(dropout=0.1), "dropout"),
        (GPT2, lambda s: s["model"].update(continuing_subword_prefix="##"), "continuing_subword_prefix"),
        (GPT2, lambda s: s["model"].update(end_of_word_suffix="</w>"), "end_of_word_suffix"),
        (GPT2, lambda s: s["model"].update(ignore_merges=True), "ignore_merges"),
        (GPT2, lambda s: s["model"]["vocab"].update({"two words": 50257}), "byte-level alphabet"),
        (GPT2, lambda s: s["model"]["merges"].insert(0, s["model"]["merges"].pop(1)), "not in merge order"),
        (GPT2, lambda s: s.update(normalizer={"type": "Lowercase"}), "normalizer Lowercase"),
        (GPT2, lambda s: s.update(pre_tokenizer={"type": "Whitespace"}), "pre-tokenizer"),
        (
            GPT2,
            lambda s: s.update(pre_tokenizer={"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always"}),
            "pre-tokenizer",
        ),
        (QWEN2, lambda s: s["pre_tokenizer"]["pretokenizers"][0].update(behavior="Removed"), "pre-tokenizer"),
        (QWEN2, lambda s: s["pre_tokenizer"]["pretokenizers"][0].update(invert=True), "pre-tokenizer"),
        (QWEN2, lambda s: s["pre_tokenizer"]["pretokenizers"][1].update(add_prefix_space=True), "pre-tokenizer"),
        (
            GPT2,
            lambda s: s.update(post_processor={"type": "RobertaProcessing", "sep": ["</s>", 2], "cls": ["<s>", 0]}),
            "post-processor",
        ),
    ],
    ids=[
        "bert-wordpiece",
        "byte_fallback",
        "dropout",
        "continuing_subword_prefix",
        "end_of_word_suffix",
        "ignore_merges",
        "non-byte-level-token",
        "merges-out-of-order",
        "lowercase",
        "whitespace",
        "metaspace",
        "split-removed",
        "split-invert",
        "prefix-space-after-split",
        "roberta",
    ],
)
def test_declines(tmp_path, base, edit, reason) -> None:
    path = base if base == BERT else _variant(tmp_path, base, edit)
    with pytest.raises(Unsupported, match=reason) as info:
        convert(path)
    assert "\n" not in str(info.value)


def test_add_prefix_space(tmp_path, sample) -> None:
    """tokenizers prepends a space to every non-empty stretch between added tokens."""
    path = _variant(tmp_path, GPT2, lambda s: s["pre_tokenizer"].update(add_prefix_space=True))
    backend = convert(path)
    assert backend.add_prefix_space
    _assert_identical(path, backend, [*HARD_STRINGS, *EXTRA_STRINGS, *sample[::5]])


def test_template_processing(tmp_path, sample) -> None:
    eot = {"SpecialToken": {"id": "<|endoftext|>", "type_id": 0}}
    template = {
        "type": "TemplateProcessing",
        "single": [eot, {"Sequence": {"id": "A", "type_id": 0}}, eot, eot],
        "pair": [eot, {"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
        "special_tokens": {"<|endoftext|>": {"id": "<|endoftext|>", "ids": [50256], "tokens": ["<|endoftext|>"]}},
    }
    processors = [{"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True}, template]
    path = _variant(tmp_path, GPT2, lambda s: s.update(post_processor={"type": "Sequence", "processors": processors}))
    backend = convert(path)
    assert (backend.prefix, backend.suffix) == ([50256], [50256, 50256])
    _assert_identical(path, backend, [*HARD_STRINGS, *sample[::5]])


def test_nfkc(tmp_path, sample) -> None:
    path = _variant(tmp_path, QWEN2, lambda s: s.update(normalizer={"type": "NFKC"}))
    _assert_identical(path, convert(path), [*HARD_STRINGS, *EXTRA_STRINGS, *_random_strings(300, 1), *sample[::5]])


def test_byte_level_without_regex(tmp_path) -> None:
    """ByteLevel(use_regex=false): each stretch between added tokens is one BPE word."""
    path = _variant(tmp_path, GPT2, lambda s: s["pre_tokenizer"].update(use_regex=False, add_prefix_space=True))
    _assert_identical(path, convert(path), [*HARD_STRINGS, *EXTRA_STRINGS])


@pytest.mark.parametrize("form", ["NFC", "NFKC"])
def test_python_normalized_text_is_left_alone_by_tokenizers(form) -> None:
    """The backend skips the normalizer for text Python finds normalized; tokenizers agrees."""
    marks = [
        chr(c) for c in range(0x300, 0x20000) if unicodedata.combining(chr(c)) or unicodedata.decomposition(chr(c))
    ]
    pool = [*marks, *map(chr, range(0x1100, 0x1200)), *"aeiouAEIOU<>=", "\U00011935", "\U00011930"]
    rng = random.Random(2)
    texts = ["".join(rng.choice(pool) for _ in range(rng.randint(1, 6))) for _ in range(20_000)]
    texts = [t for t in texts + [unicodedata.normalize(form, t) for t in texts] if unicodedata.is_normalized(form, t)]
    assert len(texts) > 10_000
    normalizer = getattr(normalizers, form)()
    assert [t for t in texts if normalizer.normalize_str(t) != t] == []


def test_split_regex_with_gaps(tmp_path, sample) -> None:
    """Split(Isolated) keeps the text between matches as pieces; tiktoken alone would drop it."""
    pattern = r"\p{L}+|\p{N}"
    path = _variant(tmp_path, QWEN2, lambda s: s["pre_tokenizer"]["pretokenizers"][0]["pattern"].update(Regex=pattern))
    backend = convert(path)
    texts = [*HARD_STRINGS, *EXTRA_STRINGS, *sample[::5]]
    _assert_identical(path, backend, texts)
    plain = tiktoken.Encoding(
        "plain", pat_str=pattern, mergeable_ranks=backend.encoding._mergeable_ranks, special_tokens={}
    )
    assert plain.decode(plain.encode_ordinary("a, b")) == "ab"


# Tiny byte-level BPEs over "a" and "b", checked on every a/b string up to 10 letters.
AB_STRINGS = ["".join(p) for n in range(1, 11) for p in itertools.product("ab", repeat=n)]


def _tiny(tmp_path: Path, merges: list[tuple[str, str]], ignore_merges: bool = False) -> Path:
    spec = json.loads(GPT2.read_text(encoding="utf-8"))
    vocab = {token: i for token, i in spec["model"]["vocab"].items() if i < 256}
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    spec["model"].update(vocab=vocab, merges=[f"{a} {b}" for a, b in merges], ignore_merges=ignore_merges)
    spec["added_tokens"] = []
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(spec), encoding="utf-8")
    return path


def test_tokens_the_merges_cannot_build_are_left_out(tmp_path) -> None:
    # "aba" comes only from (ab, a), but "ba" merges first, so tokenizers never builds it.
    path = _tiny(tmp_path, [("b", "a"), ("a", "b"), ("ab", "a")])
    backend = convert(path)
    ranks = backend.encoding._mergeable_ranks
    assert b"aba" not in ranks
    want = _reference(path, AB_STRINGS)
    assert _split(*backend.encode_batch(AB_STRINGS)) == want
    # Trusting ranks alone (keeping "aba") would be wrong: tiktoken merges [a][ba] into it.
    whole = {**ranks, b"aba": Tokenizer.from_file(str(path)).token_to_id("aba")}
    naive = tiktoken.Encoding("whole", pat_str=BYTE_LEVEL_PATTERN, mergeable_ranks=whole, special_tokens={})
    assert naive.encode_ordinary("aba") != _reference(path, ["aba"])[0]


def test_overlapping_merges_for_one_token(tmp_path) -> None:
    # (ab, a) and (a, ba) both build "aba" and overlap in [ab][a][ba]: tiktoken takes the left one.
    left_first = _tiny(tmp_path, [("a", "b"), ("b", "a"), ("ab", "a"), ("a", "ba")])
    assert _split(*convert(left_first).encode_batch(AB_STRINGS)) == _reference(left_first, AB_STRINGS)
    right_first = _tiny(tmp_path, [("a", "b"), ("b", "a"), ("a", "ba"), ("ab", "a")])
    with pytest.raises(Unsupported, match="overlap"):
        convert(right_first)


def test_part_built_after_its_result(tmp_path) -> None:
    with pytest.raises(Unsupported, match="part with an id above"):
        convert(_tiny(tmp_path, [("a", "b"), ("a", "bc"), ("b", "c")]))


def test_ignore_merges(tmp_path) -> None:
    built = _tiny(tmp_path, [("a", "b"), ("ab", "a"), ("aba", "a")], ignore_merges=True)
    assert _split(*convert(built).encode_batch(AB_STRINGS)) == _reference(built, AB_STRINGS)
    unbuilt = _tiny(tmp_path, [("b", "a"), ("a", "b"), ("ab", "a")], ignore_merges=True)
    with pytest.raises(Unsupported, match="ignore_merges with vocab token 'aba'"):
        convert(unbuilt)


def test_verify(converted, sample) -> None:
    path, backend = converted
    result = verify(path, backend, sample)
    assert result.ok and result.differing == 0 and result.first_difference is None
    assert result.documents > len(HARD_STRINGS) and result.seconds < 10

    ranks = dict(backend.encoding._mergeable_ranks)
    ranks[b" the"], ranks[b" and"] = ranks[b" and"], ranks[b" the"]
    broken = copy.copy(backend)
    broken.encoding = tiktoken.Encoding(
        "broken", pat_str=backend.encoding._pat_str, mergeable_ranks=ranks, special_tokens={}
    )
    result = verify(path, broken, sample)
    assert not result.ok and result.differing > 0 and "tiktoken" in result.first_difference

    failing = copy.copy(backend)
    failing.encoding = None
    result = verify(path, failing, sample)
    assert not result.ok and result.differing == result.documents and "raised" in result.first_difference


def _ids_of(backend: TiktokenBackend, texts: list[str]) -> list[list[int]]:
    return _split(*backend.encode_batch(texts))


def test_conversion_is_cached_by_content(tmp_path, monkeypatch, sample) -> None:
    """The second convert of the same file reads the cache instead of converting; another file does not."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    first = convert(GPT2)
    (cached,) = (tmp_path / "cache" / "prep").glob("tiktoken-*.marshal")
    assert tiktoken_backend.cache_dir() == tmp_path / "cache" / "prep"
    assert hashlib.sha256(GPT2.read_bytes()).hexdigest() in cached.name

    def no_conversion(*args):
        raise AssertionError("converted again")

    monkeypatch.setattr(tiktoken_backend, "_conversion", no_conversion)
    again = convert(GPT2)
    assert _ids_of(again, sample[:300]) == _ids_of(first, sample[:300]) == _reference(GPT2, sample[:300])
    copy_of = tmp_path / "copy.json"
    copy_of.write_bytes(GPT2.read_bytes().replace(b'"<|endoftext|>"', b'"<|endoftext|> "', 1))
    with pytest.raises(AssertionError, match="converted again"):
        convert(copy_of)


def test_bad_or_unwritable_cache_costs_only_time(tmp_path, monkeypatch, sample) -> None:
    cache = tmp_path / "cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    convert(GPT2)
    (cached,) = (cache / "prep").glob("tiktoken-*.marshal")
    for damage in (b"", b"\x00garbage", cached.read_bytes()[:1000]):
        cached.write_bytes(damage)
        assert _ids_of(convert(GPT2), sample[:100]) == _reference(GPT2, sample[:100])
        assert cached.stat().st_size > 100_000  # converted again and rewritten whole
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocked))
    assert _ids_of(convert(GPT2), sample[:100]) == _reference(GPT2, sample[:100])


def test_concurrent_writers_leave_one_whole_file(tmp_path) -> None:
    """Four processes convert at once into an empty cache: one whole file, no temp files, all ids right."""
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path))
    code = ("import sys; from prep.text.tiktoken_backend import convert; "
            "print(convert(sys.argv[1]).encode_batch(['Hello world'])[0].tolist())")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(GPT2)], env=env, stdout=subprocess.PIPE, text=True)
             for _ in range(4)]
    outputs = [p.communicate(timeout=300)[0].strip() for p in procs]
    assert outputs == ["[15496, 995]"] * 4
    files = list((tmp_path / "prep").iterdir())
    assert len(files) == 1 and files[0].name.endswith(".marshal")
    assert tiktoken_backend._read_cache(files[0])["ranks"] == convert(GPT2).encoding._mergeable_ranks


def test_backend_pickles(converted, sample) -> None:
    """Workers may receive a converted backend instead of converting again."""
    _, backend = converted
    clone = pickle.loads(pickle.dumps(backend))
    for a, b in zip(backend.encode_batch(sample[:200]), clone.encode_batch(sample[:200]), strict=True):
        assert np.array_equal(a, b)


@pytest.mark.slow
@pytest.mark.parametrize("path", [GPT2, QWEN2], ids=["gpt2", "qwen2"])
def test_every_code_point_in_context(path) -> None:
    """Oniguruma (tokenizers) and Rust regex (tiktoken) class every code point alike."""
    backend = convert(path)
    texts = [
        f"a{c}b {c}1{c}{c}\n{c} x'{c} {c}\r\n"
        for c in map(chr, range(0x80, 0x110000))
        if not 0xD800 <= ord(c) <= 0xDFFF
    ]
    reference = Tokenizer.from_file(str(path))
    for start in range(0, len(texts), 50_000):
        batch = texts[start : start + 50_000]
        want = [e.ids for e in reference.encode_batch_fast(batch)]
        got = _split(*backend.encode_batch(batch))
        differing = [t for t, g, w in zip(batch, got, want, strict=True) if g != w]
        assert not differing, f"{len(differing)} differ, first {differing[0]!r}"
