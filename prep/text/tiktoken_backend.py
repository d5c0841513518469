"""A verified tiktoken fast path for byte-level BPE tokenizers.

`tokenizers` is the reference for every token id; tiktoken runs the same byte-level BPE
several times faster per core. `convert` builds a tiktoken `Encoding` from a
`tokenizer.json` only where it can show the ids are identical, and raises `Unsupported`
(one line naming the reason) otherwise; `verify` then checks the claim on real text.

Why the ids are identical:

* BPE. tiktoken merges the adjacent pair whose concatenation has the lowest rank (ranks =
  token ids here); `tokenizers` merges the listed pair with the lowest merge index. They
  agree when (1) merge results have non-decreasing ids in merge order and each part has a
  lower id than its result, (2) where two merges build the same token and can overlap in
  a word ([x][s][z], x+s == s+z), the left one comes first, as tiktoken's leftmost rule
  picks, and (3) tiktoken's ranks hold only tokens that `tokenizers`' merges build from
  their own bytes: a token that fails (3) is never produced by `tokenizers`, so it is left
  out (with `ignore_merges`, which emits any vocab word whole, we decline instead).
* Pre-tokenizer. The regex is wrapped so that text between two matches is a piece of its
  own, as in `tokenizers`' Split(Isolated), where tiktoken alone would drop it.
* Added tokens. A document in which `tokenizers` could recognise an added token (special
  or not; matched in the raw or in the normalized text, as its `normalized` flag says) is
  encoded by `tokenizers` itself, so lstrip/rstrip/single_word need no re-implementation.
  So is a document with a lone surrogate (`tokenizers` raises, tiktoken would replace it).
* NFC/NFKC. Text that Python already finds normalized is left as is: Python's Unicode
  tables are newer than those of `tokenizers`, and text normalized under the newer tables
  is unchanged by the older ones. Other text goes through the tokenizer's own normalizer.

Converting a large vocabulary takes about a second, so its result (ranks, regex, options) is
cached by the tokenizer file's sha256 and the library versions, under $XDG_CACHE_HOME/prep
(else ~/.cache/prep). It needs the `tokenizers` 0.2x API (models, normalizers); with 1.x
installed, `tokenizers` itself is the faster exact backend.
"""

from __future__ import annotations

import array
import hashlib
import itertools
import json
import marshal
import os
import re
import sys
import tempfile
import time
import unicodedata
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tiktoken
import tokenizers
from tokenizers import Tokenizer
from tokenizers.models import BPE

from prep.text.cache import cache_dir
from prep.text.hf import hf_encode_ids, load_hf_tokenizer

# The regex of tokenizers' ByteLevel pre-tokenizer with use_regex=True (byte_level.rs).
BYTE_LEVEL_PATTERN = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"

VERIFY_SAMPLE_CHARS = 256 * 1024

# GPT-2's bytes_to_unicode: printable Latin-1 bytes stand for themselves, the other 68
# bytes for U+0100..U+0143 in byte order.
_PRINTABLE = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
_BYTE_OF_CHAR = {
    **{chr(b): chr(b) for b in _PRINTABLE},
    **{chr(0x100 + i): chr(b) for i, b in enumerate(sorted(set(range(256)) - set(_PRINTABLE)))},
}
_NOT_BYTE_LEVEL = re.compile("[^!-~\xa1-\xac\xae-\u0143]")
_SURROGATE = re.compile("[\ud800-\udfff]")

# Strings where a fast path is most likely to go wrong; `verify` adds the tokenizer's own
# added tokens placed in text.
HARD_STRINGS: tuple[str, ...] = (
    "",
    " ",
    "  ",
    "Hello world",
    " Hello world ",
    "   leading and trailing   ",
    "I'm, you're, he's, we've, they'll, she'd, it'S, I'M, DON'T, O'Neil's ''s 's ’s 'ſ 'K",
    "line one\r\nline two\r\n\r\n\rlast\n",
    "tabs\t\tand\x0bvertical\x0cfeeds\n\n\n",
    "a" + " " * 40 + "b" + "\n" * 12 + "c" + "\t " * 9,
    "1234567890 3.14159 1,000,000 00000000000000000000001 ٣٤٥ ५६७ ⅷ ² ①",
    "NUL\x00byte \x00\x00 and controls \x01\x1b[0m \x1c\x1d\x1e\x1f \x7f",
    "emoji 😀😃😄 👍🏽 👨\u200d👩\u200d👧\u200d👦 🏳️\u200d🌈 ❤️ 🇫🇷🇩🇪 *️⃣ 🧑🏿\u200d💻 \u200d",
    "combining e\u0301 a\u0300\u0301\u0302 n\u0303 \u0301leading mark, Zalgo z\u0336\u0353\u0345a\u0335l\u0334",
    "precomposed é vs decomposed e\u0301; Å \u212b \u2126 \ufb01 ﬀ ｆｕｌｌｗｉｄｔｈ ＡＢＣ ㍿ ¼",
    "中文测试：你好，世界！《红楼梦》第一回 甄士隐梦幻识通灵　贾雨村风尘怀闺秀。",
    "日本語のテキスト、カタカナとひらがな。한국어 텍스트입니다.",
    "mixed: English, русский, ελληνικά, עברית, العربية, हिन्दी, ไทย, ქართული, 中文 and 😀",
    "unicode spaces:\u00a0\u1680\u2000\u2001\u2002\u2003\u2009\u200a\u2028\u2029\u202f\u205f\u3000|"
    "\u0085|\u180e|\u200b\u200c\u200d\u2060\ufeff|",
    "code: def f(x):\n    return x**2  # comment\n\tif a != b: print(f'{a!r}')\n",
    '<html><body class="x">&amp; &lt;tag&gt; https://example.com/a?b=c&d=e#f</body></html>',
    "punctuation!!! ??? ... --- ___ *** ((( ))) [[[ ]]] {{{ }}} ``` ''' \"\"\" ~~~ ### $$$ %%%",
    "<|endoftext|>",
    "text<|endoftext|>more text <|endoftext|> <|endoftext|><|endoftext|>",
    "<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n",
    "<|endoftext|\u0338 <|endoftext|>\u0338 <|endoftext",
    "\U0001d400\U0001d41a maths, \U00011935\U00011930 Dives Akuru, \U0001e900 Adlam, \u07fd\u0898 new marks",
)


class Unsupported(Exception):
    """The tokenizer cannot be run exactly by tiktoken; str(e) names what, in one line."""


@dataclass(frozen=True)
class VerifyResult:
    """Outcome of comparing the backend with `tokenizers` on hard strings and sample text."""

    ok: bool
    documents: int
    differing: int
    first_difference: str | None
    seconds: float


def _pre_tokenizer(spec: dict | None) -> tuple[str, bool]:
    """Return (regex, add_prefix_space) for a supported pre-tokenizer."""
    kind = spec and spec.get("type")
    if kind == "ByteLevel":
        return (BYTE_LEVEL_PATTERN if spec.get("use_regex", True) else r"[\s\S]+"), bool(spec.get("add_prefix_space"))
    if kind == "Sequence" and len(spec["pretokenizers"]) == 2:
        split, byte_level = spec["pretokenizers"]
        if (
            split.get("type") == "Split"
            and "Regex" in split.get("pattern", {})
            and split.get("behavior") == "Isolated"
            and not split.get("invert")
            and byte_level.get("type") == "ByteLevel"
            and not byte_level.get("use_regex", True)
            and not byte_level.get("add_prefix_space")
        ):
            return split["pattern"]["Regex"], False
    raise Unsupported(
        f"pre-tokenizer {json.dumps(spec)[:100]} (only ByteLevel, or Sequence[Split(Regex, Isolated), "
        "ByteLevel(use_regex=false, add_prefix_space=false)])"
    )


def _template(spec: dict | None) -> tuple[list[int], list[int]]:
    """Ids the post-processor puts before and after a single sequence."""
    kind = spec and spec.get("type")
    if kind is None or kind == "ByteLevel":
        return [], []
    if kind == "Sequence":
        others = [p for p in spec["processors"] if p.get("type") != "ByteLevel"]
        if len(others) <= 1 and all(p.get("type") == "TemplateProcessing" for p in others):
            return _template(others[0] if others else None)
    if kind == "TemplateProcessing":
        single = spec["single"]
        at = [i for i, item in enumerate(single) if "Sequence" in item]
        if len(at) == 1 and single[at[0]]["Sequence"]["id"] == "A":
            ids = [
                spec["special_tokens"][item["SpecialToken"]["id"]]["ids"] if "SpecialToken" in item else []
                for item in single
            ]
            return list(itertools.chain(*ids[: at[0]])), list(itertools.chain(*ids[at[0] + 1 :]))
    raise Unsupported(f"post-processor {json.dumps(spec)[:100]} (only ByteLevel, TemplateProcessing, Sequence)")


def _check_model(model: dict, kind: str) -> None:
    """Decline models and BPE options whose results tiktoken cannot reproduce."""
    if kind != "BPE":
        raise Unsupported(f"model type {kind} (only byte-level BPE)")
    if model.get("dropout"):
        raise Unsupported(f"BPE dropout {model['dropout']} (random merges)")
    if model.get("byte_fallback"):
        raise Unsupported("BPE byte_fallback")
    for option in ("continuing_subword_prefix", "end_of_word_suffix"):
        if model.get(option):
            raise Unsupported(f"BPE {option} {model[option]!r}")


def _check_merge_order(merges: list[list[str]], vocab: dict[str, int]) -> None:
    """Conditions (1) and (2) of the module docstring."""
    left = np.array([vocab[a] for a, _ in merges], dtype=np.int64)
    right = np.array([vocab[b] for _, b in merges], dtype=np.int64)
    result = np.array([vocab[a + b] for a, b in merges], dtype=np.int64)
    backwards = np.flatnonzero(np.diff(result) < 0)
    if len(backwards):
        i = int(backwards[0]) + 1
        raise Unsupported(
            f"merge #{i} {merges[i]} makes id {result[i]} after id {result[i - 1]} (ids not in merge order)"
        )
    bad_parts = np.flatnonzero((left >= result) | (right >= result))
    if len(bad_parts):
        raise Unsupported(f"merge #{bad_parts[0]} {merges[bad_parts[0]]} has a part with an id above its result's")
    _, first, counts = np.unique(result, return_index=True, return_counts=True)
    # For one token: merge indices of (x, s) by s, and of (s, z) by s.
    as_right: dict[tuple[int, str], list[int]] = defaultdict(list)
    as_left: dict[tuple[int, str], list[int]] = defaultdict(list)
    for start, count in zip(first[counts > 1].tolist(), counts[counts > 1].tolist(), strict=True):
        for k in range(start, start + count):
            as_left[start, merges[k][0]].append(k)
            as_right[start, merges[k][1]].append(k)
    for key in as_left.keys() & as_right.keys():
        if max(as_right[key]) > min(as_left[key]):
            raise Unsupported(
                f"merges {merges[max(as_right[key])]} and {merges[min(as_left[key])]} build one token and can "
                "overlap, tokenizers would apply the right one first"
            )


def _mergeable_ranks(model: dict, hf: Tokenizer, added: set[str]) -> dict[bytes, int]:
    """Byte-level vocab -> tiktoken ranks (= ids), keeping only tokens BPE can build."""
    vocab: dict[str, int] = model["vocab"]
    if not _BYTE_OF_CHAR.keys() <= vocab.keys():
        raise Unsupported("vocab lacks some of the 256 byte-level symbols (not a byte-level BPE)")
    foreign = [t for t in vocab if _NOT_BYTE_LEVEL.search(t) and t not in added]
    if foreign:
        raise Unsupported(f"vocab token {foreign[0]!r} is outside the byte-level alphabet (not a byte-level BPE)")
    merges = [m.split(" ") if isinstance(m, str) else m for m in model["merges"]]
    _check_merge_order(merges, vocab)

    # Condition (3): a token is kept when tokenizers' merges turn its bytes into itself.
    bpe = BPE(vocab=vocab, merges=[tuple(m) for m in merges]) if model.get("ignore_merges") else hf.model
    candidates = [t for t in vocab if len(t) > 1 and not _NOT_BYTE_LEVEL.search(t)]
    built = [t for t in candidates if [token.id for token in bpe.tokenize(t)] == [vocab[t]]]
    if model.get("ignore_merges") and len(built) < len(candidates):
        missing = sorted(set(candidates) - set(built), key=vocab.__getitem__)[0]
        raise Unsupported(f"ignore_merges with vocab token {missing!r} that the merges do not build")
    table = str.maketrans(_BYTE_OF_CHAR)
    return {t.translate(table).encode("latin-1"): vocab[t] for t in itertools.chain(_BYTE_OF_CHAR, built)}


def _alternation(strings: Sequence[str]) -> re.Pattern[str] | None:
    """A regex matching any of `strings`, or None when there are none."""
    strings = sorted({s for s in strings if s}, key=len, reverse=True)
    return re.compile("|".join(map(re.escape, strings))) if strings else None


class TiktokenBackend:
    """Encodes documents with tiktoken, giving exactly `tokenizers`' ids.

    A document in which an added token may be recognised (or with a lone surrogate) is
    encoded by `tokenizers` itself; `fallback_documents` counts them.
    """

    name = "tiktoken"

    def __init__(
        self,
        encoding: tiktoken.Encoding,
        hf: Tokenizer,
        *,
        normal_form: str | None,
        add_prefix_space: bool,
        prefix: list[int],
        suffix: list[int],
        raw_added: re.Pattern[str] | None,
        normalized_added: re.Pattern[str] | None,
    ) -> None:
        self.encoding = encoding
        self.hf = hf
        self.normal_form = normal_form
        self.add_prefix_space = add_prefix_space
        self.prefix = prefix
        self.suffix = suffix
        self.raw_added = raw_added
        self.normalized_added = normalized_added
        self.fallback_documents = 0

    def _normalize(self, text: str) -> str:
        if text.isascii() or unicodedata.is_normalized(self.normal_form, text):
            return text
        return self.hf.normalizer.normalize_str(text)

    def _needs_tokenizers(self, text: str, normalized: str) -> bool:
        return bool(
            (self.raw_added and self.raw_added.search(text))
            or (self.normalized_added and self.normalized_added.search(normalized))
            or (not text.isascii() and _SURROGATE.search(text))
        )

    def encode_batch(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Return (ids, offsets): uint32 ids of all documents end to end, int64 offsets, len(texts) + 1."""
        normalized = [self._normalize(t) for t in texts] if self.normal_form else texts
        hard = [i for i, (t, n) in enumerate(zip(texts, normalized, strict=True)) if self._needs_tokenizers(t, n)]
        if self.add_prefix_space:
            normalized = [" " + t if t and t[0] != " " else t for t in normalized]
        encode = self.encoding.encode_ordinary
        if self.prefix or self.suffix:
            docs = [self.prefix + encode(t) + self.suffix for t in normalized]
        else:
            docs = [encode(t) for t in normalized]
        if hard:
            self.fallback_documents += len(hard)
            for i, ids in zip(hard, hf_encode_ids(self.hf, [texts[i] for i in hard]), strict=True):
                docs[i] = ids
        offsets = np.zeros(len(docs) + 1, dtype=np.int64)
        np.cumsum(np.fromiter(map(len, docs), dtype=np.int64, count=len(docs)), out=offsets[1:])
        flat = array.array("I")  # extending from lists is ~1.4x faster than np.fromiter over a chain
        for doc in docs:
            flat.extend(doc)
        return np.frombuffer(flat, dtype=np.uint32), offsets


# Bump when what `_conversion` returns changes meaning.
CACHE_FORMAT = 1


def _cache_path(raw: bytes) -> Path:
    """One file per tokenizer content and library versions (the ranks depend on tokenizers' BPE)."""
    python = f"py{sys.version_info[0]}{sys.version_info[1]}"  # marshal's format is Python's own
    versions = f"{CACHE_FORMAT}-{tiktoken.__version__}-{tokenizers.__version__}-{python}"
    return cache_dir() / f"tiktoken-{hashlib.sha256(raw).hexdigest()}-{versions}.marshal"


def _read_cache(path: Path) -> dict | None:
    """The cached conversion, or None when absent or unreadable (it is then converted again)."""
    try:
        with open(path, "rb") as f:
            cached = marshal.load(f)
    except (OSError, EOFError, ValueError, TypeError):
        return None
    return cached if isinstance(cached, dict) and cached.get("format") == CACHE_FORMAT else None


def _write_cache(path: Path, conversion: dict) -> None:
    """Temp file + rename: concurrent runs each write a whole file, and a reader sees one whole file.

    A cache that cannot be written (read-only home, full disk) only costs the next run the conversion."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    except OSError:
        return
    try:
        with os.fdopen(fd, "wb") as f:
            marshal.dump(conversion, f)
        os.replace(temp, path)
    except OSError:
        Path(temp).unlink(missing_ok=True)


def _conversion(path: str | Path, text: str) -> dict:
    """What tiktoken needs for this tokenizer.json (plain data, so it can be cached), or raise Unsupported.

    The model is checked before `tokenizers` loads the file: some options it declines make the loader panic."""
    spec = json.loads(text)
    model = spec["model"]
    # Some files leave the model's type out; tokenizers then tells it from the fields.
    _check_model(model, model.get("type") or type(load_hf_tokenizer(path).model).__name__)
    normalizer = spec.get("normalizer")
    if normalizer is not None and normalizer.get("type") not in ("NFC", "NFKC"):
        raise Unsupported(f"normalizer {normalizer.get('type')} (only none, NFC, NFKC)")
    pattern, add_prefix_space = _pre_tokenizer(spec.get("pre_tokenizer"))
    prefix, suffix = _template(spec.get("post_processor"))

    hf = load_hf_tokenizer(path)
    added = [t for t in hf.get_added_tokens_decoder().values() if t.content]
    ranks = _mergeable_ranks(model, hf, {t.content for t in added})
    normalize = hf.normalizer.normalize_str if normalizer else str
    raw_added = _alternation([t.content for t in added if not t.normalized])
    normalized_added = _alternation([normalize(t.content) for t in added if t.normalized])
    return {
        "format": CACHE_FORMAT,
        # Text between two regex matches is a piece of its own in Split(Isolated).
        "pat_str": f"(?:{pattern})|(?:(?!(?:{pattern}))[\\s\\S])+",
        "ranks": ranks,
        "normal_form": normalizer and normalizer["type"],
        "add_prefix_space": add_prefix_space,
        "prefix": prefix,
        "suffix": suffix,
        "raw_added": raw_added and raw_added.pattern,
        "normalized_added": normalized_added and normalized_added.pattern,
    }


def convert(tokenizer_json_path: str | Path) -> TiktokenBackend:
    """Build the tiktoken backend for a tokenizer.json, or raise Unsupported with the reason."""
    raw = Path(tokenizer_json_path).read_bytes()
    cache = _cache_path(raw)
    conversion = _read_cache(cache)
    if conversion is None:
        conversion = _conversion(tokenizer_json_path, raw.decode("utf-8"))
        _write_cache(cache, conversion)
    try:
        encoding = tiktoken.Encoding(
            f"prep:{Path(tokenizer_json_path).name}",
            pat_str=conversion["pat_str"],
            mergeable_ranks=conversion["ranks"],
            special_tokens={},
        )
    except ValueError as exc:
        raise Unsupported(f"pre-tokenizer regex rejected by tiktoken: {exc}") from exc
    return TiktokenBackend(
        encoding,
        load_hf_tokenizer(tokenizer_json_path),
        normal_form=conversion["normal_form"],
        add_prefix_space=conversion["add_prefix_space"],
        prefix=conversion["prefix"],
        suffix=conversion["suffix"],
        raw_added=conversion["raw_added"] and re.compile(conversion["raw_added"]),
        normalized_added=conversion["normalized_added"] and re.compile(conversion["normalized_added"]),
    )


def _hard_strings(backend: TiktokenBackend) -> list[str]:
    """The built-in hard strings plus each added token placed in and around text."""
    placed = [
        form.format(t=token.content)
        for token in backend.hf.get_added_tokens_decoder().values()
        for form in ("{t}", "a{t}b", " {t} ", "{t}{t}\n{t}", "x {t}\u0338", "{t}\u00e9 {t}")
    ]
    return [*HARD_STRINGS, *placed]


def _capped(texts: Sequence[str], budget: int) -> list[str]:
    """The leading documents of `texts` up to `budget` characters, the last one cut."""
    kept = []
    for text in texts:
        if budget <= 0:
            break
        kept.append(text[:budget])
        budget -= len(text)
    return kept


def verify(tokenizer_json_path: str | Path, backend: TiktokenBackend, sample_texts: Sequence[str]) -> VerifyResult:
    """Compare `backend` with tokenizers on hard strings and the first 256 Ki characters of sample text.

    The reference is `Tokenizer.from_file` (special tokens added, no padding or truncation), loaded
    once per process. A backend that raises counts as differing on every document.
    """
    start = time.perf_counter()
    texts = _hard_strings(backend) + _capped(sample_texts, VERIFY_SAMPLE_CHARS)
    reference = load_hf_tokenizer(tokenizer_json_path)
    expected = hf_encode_ids(reference, texts)
    try:
        ids, offsets = backend.encode_batch(texts)
    except Exception as exc:  # a fast path that crashes has failed verification; the run goes on without it
        return VerifyResult(False, len(texts), len(texts), f"backend raised {exc!r}"[:200], time.perf_counter() - start)
    differing = [i for i, want in enumerate(expected) if ids[offsets[i] : offsets[i + 1]].tolist() != want]
    first = None
    if differing:
        i = differing[0]
        got = ids[offsets[i] : offsets[i + 1]].tolist()
        at = next(
            (k for k, (a, b) in enumerate(zip(got, expected[i], strict=False)) if a != b),
            min(len(got), len(expected[i])),
        )
        first = (
            f"document {i} {texts[i][:40]!r}: from token {at}, tiktoken {got[at : at + 3]} "
            f"vs tokenizers {expected[i][at : at + 3]}"
        )
    return VerifyResult(not differing, len(texts), len(differing), first, time.perf_counter() - start)
