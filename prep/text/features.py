"""Per-document features of a batch, computed for the whole batch at once.

Workers call `compute_features` on every chunk, so it must stay far cheaper than tokenizing: one
compiled pass (`prep.text._feature_kernel`, numba) walks each text's characters once, classifying
every character through a lookup table over all of Unicode (built once, kept in prep's cache
directory) and cutting words, finds its lines, and groups words, lines and word n-grams in a small
hash table per text while they are in the CPU's cache (~6.5 ms per MiB for all 20 features, from ~42
as numpy passes). No Python object is made per document, except content_hash's XXH3 call for a text
whose joined words pass 240 bytes (shorter ones are hashed in one compiled call, `prep.text._xxh3`). A
document's features depend on that document alone, never on the rest of the batch, and are
bit-for-bit reproducible.

Memory: one document may be as large as a batch (tens of MB); its scratch space is about 7 times its
size with every feature (32 bytes a word and 12 a hash-table slot), paid only as far as texts need it.
"""

from __future__ import annotations

import functools
import unicodedata
from collections.abc import Callable, Iterator, Sequence
from functools import cached_property

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import xxhash

from prep.errors import UserError
from prep.text.arrow import arrow_of, binary_array, numpy_of, string_scalar, utf8_of
from prep.text.cache import cached_table

_F32, _I64 = pa.float32(), pa.int64()

# name -> (type, definition); the order is the order of the README table.
_SPECS: dict[str, tuple[pa.DataType, str]] = {
    "num_bytes": (_I64, "UTF-8 bytes of the text"),
    "num_chars": (_I64, "Unicode code points of the text"),
    "num_words": (_I64, "words: maximal runs of non-whitespace characters (as Python's `str.split()`)"),
    "num_lines": (
        _I64,
        'lines: pieces of the text split at "\\n", not counting the empty piece after a trailing "\\n" '
        "(an empty text has 0 lines, `a\\n` has 1, `a\\n\\nb` has 3)",
    ),
    "num_tokens": (_I64, "token ids of the document (length of `input_ids`)"),
    "chars_per_token": (_F32, "num_chars / num_tokens; 0 when there are no tokens"),
    "mean_word_length": (_F32, "mean characters per word; 0 when there are no words"),
    "frac_alpha": (
        _F32,
        "fraction of characters that are letters (Unicode category L*); every frac_* is 0 for an empty text",
    ),
    "frac_digit": (_F32, "fraction of characters that are decimal digits (Unicode category Nd)"),
    "frac_upper": (_F32, "fraction of characters that are uppercase letters (Unicode category Lu)"),
    "frac_whitespace": (_F32, "fraction of characters that are whitespace (Python's `str.isspace()`)"),
    "frac_punct": (
        _F32,
        "fraction of characters that are punctuation (Unicode categories P*; "
        "symbols such as $ + < = > ^ ~ are not)",
    ),
    "frac_non_ascii": (_F32, "fraction of characters above U+007F"),
    "frac_cjk": (
        _F32,
        "fraction of characters in the CJK Unified Ideographs blocks (main block and extensions A-I) "
        "or the CJK Compatibility Ideographs blocks (and supplement)",
    ),
    "frac_dup_lines": (
        _F32,
        'fraction of non-empty lines (trailing "\\r" removed) that repeat an earlier line of the same '
        "text exactly (Gopher); 0 when there are no such lines",
    ),
    "top_2gram_frac": (
        _F32,
        "characters covered by the most frequent word 2-gram (words as in num_words, compared exactly): "
        "its count x its characters (spaces "
        "excluded) / characters of all words; 0 when no 2-gram occurs twice (Gopher, as in RedPajama-V2: "
        "ties go to the first to occur, overlapping occurrences all count, so it may exceed 1)",
    ),
    "top_3gram_frac": (_F32, "as top_2gram_frac, for word 3-grams"),
    "top_4gram_frac": (_F32, "as top_2gram_frac, for word 4-grams"),
    "unique_token_ratio": (_F32, "distinct token ids / num_tokens; 0 when there are no tokens"),
    "content_hash": (
        pa.uint64(),
        "XXH3-64 (`xxhash.xxh3_64_intdigest`, seed 0) of the UTF-8 text with every run of whitespace "
        'made one space and the ends stripped (`" ".join(text.split())`); stable across runs and platforms',
    ),
}

FEATURES: dict[str, str] = {name: definition for name, (_, definition) in _SPECS.items()}
"""Feature name -> one-line definition, in a stable order."""

FEATURE_TYPES: dict[str, pa.DataType] = {name: type_ for name, (type_, _) in _SPECS.items()}
"""Feature name -> Arrow type of its column."""


def check_feature_names(names: Sequence[str]) -> list[str]:
    """Validate feature names early (pipeline load), so a typo fails before any work; drops repeats. `none`
    alone asks for no feature (num_tokens, always a column, stays)."""
    if "none" in names:
        if len(set(names)) > 1:
            raise UserError(f"features: 'none' cannot go with others ({', '.join(n for n in names if n != 'none')})")
        return []
    for name in names:
        if name not in FEATURES:
            raise UserError(f"unknown feature {name!r}; known: {', '.join(FEATURES)}, or all, or none")
    return list(dict.fromkeys(names))


def compute_features(
    texts: pa.StringArray | pa.LargeStringArray,
    input_ids: pa.ListArray | pa.LargeListArray,
    names: Sequence[str],
) -> dict[str, pa.Array]:
    """One array per requested feature, aligned with `texts`; a null text counts as empty, null ids as none.

    Only the intermediate results the requested features need are computed.
    """
    names = check_feature_names(names)
    if len(input_ids) != len(texts):
        raise ValueError(f"{len(texts)} texts but {len(input_ids)} input_ids")
    if not len(texts):
        return {name: arrow_of(np.zeros(0), FEATURE_TYPES[name]) for name in names}
    batch = _Batch(texts, input_ids, names)
    return {name: arrow_of(np.asarray(_COMPUTE[name](batch)), FEATURE_TYPES[name]) for name in names}


# Character classes: one bit each, combined per code point.
_ALPHA, _DIGIT, _UPPER, _SPACE, _PUNCT, _NON_ASCII, _CJK = (1 << i for i in range(7))
_CLASS_BITS = {
    "frac_alpha": _ALPHA,
    "frac_digit": _DIGIT,
    "frac_upper": _UPPER,
    "frac_whitespace": _SPACE,
    "frac_punct": _PUNCT,
    "frac_non_ascii": _NON_ASCII,
    "frac_cjk": _CJK,
}
_CJK_BLOCKS = (
    (0x3400, 0x4DBF),  # extension A
    (0x4E00, 0x9FFF),  # CJK Unified Ideographs
    (0xF900, 0xFAFF),  # compatibility ideographs
    (0x20000, 0x2A6DF),  # extension B
    (0x2A700, 0x2B73F),  # extension C
    (0x2B740, 0x2B81F),  # extension D
    (0x2B820, 0x2CEAF),  # extension E
    (0x2CEB0, 0x2EBEF),  # extension F
    (0x2EBF0, 0x2EE5F),  # extension I
    (0x2F800, 0x2FA1F),  # compatibility ideographs supplement
    (0x30000, 0x3134F),  # extension G
    (0x31350, 0x323AF),  # extension H
)
_BITS_OF_CATEGORY = {
    "Lu": _ALPHA | _UPPER,
    **dict.fromkeys(("Ll", "Lt", "Lm", "Lo"), _ALPHA),
    "Nd": _DIGIT,
    **dict.fromkeys(("Pc", "Pd", "Ps", "Pe", "Pi", "Pf", "Po"), _PUNCT),
}


def prepare() -> None:
    """Build the lookup tables and load the compiled pass now, e.g. once in the forkserver before workers fork
    (numba: ~0.25 s to import and load from its cache; compiling after an install or an edit takes seconds once)."""
    _char_classes()
    ids = pa.ListArray.from_arrays(arrow_of(np.array([0, 1, 1]), pa.int32()), arrow_of(np.ones(1), pa.uint32()))
    compute_features(binary_array([b"a b\na b", b""], pa.string()), ids, list(FEATURES))


@functools.cache
def _char_classes() -> tuple[np.ndarray, np.ndarray]:
    """(class id of every code point, bit mask of every class id).

    From this Python's Unicode database. Few distinct bit combinations occur (14), so a class id fits a uint8
    and a text's counts by class are few. Built on first use (~0.3 s).
    """
    bits = _code_point_bits()
    present = np.zeros(256, bool)
    present[bits] = True
    masks = np.flatnonzero(present).astype(np.uint8)  # what np.unique gives, without its sort (~30 ms)
    id_of_bits = np.zeros(256, np.uint8)
    id_of_bits[masks] = np.arange(len(masks))
    return id_of_bits[bits], masks


def _code_point_bits() -> np.ndarray:
    """The class bits of every code point: computed once per Unicode database and kept in prep's cache directory
    (walking 1.1 M code points costs ~0.4 s, paid by every run's forkserver otherwise)."""
    recipe = repr((unicodedata.unidata_version, sorted(_BITS_OF_CATEGORY.items()), _CJK_BLOCKS,
                   (_ALPHA, _DIGIT, _UPPER, _SPACE, _PUNCT, _NON_ASCII, _CJK)))
    return cached_table("code-point-classes", recipe, _walk_code_points)


def _walk_code_points() -> np.ndarray:
    bits = np.fromiter(
        (_BITS_OF_CATEGORY.get(unicodedata.category(chr(c)), 0) for c in range(0x110000)), np.uint8, 0x110000
    )
    bits[[c for c in range(0x110000) if chr(c).isspace()]] |= _SPACE
    bits[0x80:] |= _NON_ASCII
    for first, last in _CJK_BLOCKS:
        bits[first : last + 1] |= _CJK
    return bits


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den in float64 (cast to float32 later), 0 where den is 0."""
    return np.divide(num, den, out=np.zeros(len(num)), where=den > 0)


class _Batch:
    """The arrays the requested features are read from: the compiled pass's per-text counts (once, for all
    text features), the token counts and the joined words for content_hash."""

    def __init__(
        self, texts: pa.StringArray | pa.LargeStringArray, input_ids: pa.ListArray | pa.LargeListArray | None,
        names: Sequence[str],
    ) -> None:
        self.texts = pc.fill_null(texts, string_scalar("", texts.type)) if texts.null_count else texts
        self.input_ids = input_ids
        self.n = len(texts)
        self.names = set(names)

    @cached_property
    def utf8(self) -> tuple[np.ndarray, np.ndarray]:
        """(UTF-8 bytes behind the texts, int64 offsets of each text into them)."""
        return utf8_of(self.texts)

    @cached_property
    def compiled(self) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
        """(per-text counts by name, the texts' words joined by one space, offsets of each text's in them) from
        the compiled pass (`prep.text._feature_kernel`), which computes only what the requested features need."""
        from prep.text import _feature_kernel as kernel

        names = self.names
        flags = (
            (kernel.WANT_WORDS if names & {"num_words", "mean_word_length"} else 0)
            | (kernel.WANT_NGRAMS if any(name.startswith("top_") for name in names) else 0)
            | (kernel.WANT_LINES if names & {"num_lines", "frac_dup_lines"} else 0)
            | (kernel.WANT_JOINED if "content_hash" in names else 0)
        )
        data, offsets = self.utf8
        if self.n and int(np.diff(offsets).max()) >= 1 << 31:
            raise UserError("a document of 2 GiB or more is over the features' limit: lower --max-document-bytes")
        joined = np.empty(offsets[-1] - offsets[0] if flags & kernel.WANT_JOINED else 0, np.uint8)
        joined_offsets = np.zeros(self.n + 1, np.int64)
        class_of, masks = _char_classes()
        counts = kernel.text_stats(data, offsets, class_of, masks, flags, joined, joined_offsets)
        columns = {"chars": kernel.CHARS, "words": kernel.WORDS, "word_chars": kernel.WORD_CHARS,
                   "lines": kernel.LINES, "non_empty_lines": kernel.NON_EMPTY_LINES, "dup_lines": kernel.DUP_LINES,
                   "top2": kernel.TOP2, "top3": kernel.TOP3, "top4": kernel.TOP4}
        stats = {**{name: counts[bit.bit_length() - 1] for name, bit in _CLASS_BITS.items()},
                 **{name: counts[index] for name, index in columns.items()}}
        return stats, joined, joined_offsets

    @property
    def stats(self) -> dict[str, np.ndarray]:
        return self.compiled[0]

    def ratio(self, num: str, den: str) -> np.ndarray:
        return _ratio(self.stats[num], self.stats[den])

    @cached_property
    def tokens(self) -> tuple[np.ndarray, np.ndarray]:
        """(tokens of each text, token ids of all texts in order)."""
        lengths = numpy_of(pc.list_value_length(self.input_ids), fill=0).astype(np.int64)
        return lengths, numpy_of(pc.list_flatten(self.input_ids))

    def unique_token_ratio(self) -> np.ndarray:
        from prep.text import _feature_kernel as kernel

        lengths, ids = self.tokens
        offsets = np.zeros(self.n + 1, np.int64)
        np.cumsum(lengths, out=offsets[1:])
        return _ratio(kernel.distinct_tokens(ids.astype(np.uint32, copy=False), offsets), lengths)

    def content_hash(self) -> np.ndarray:
        """XXH3-64 of each text's joined words: compiled for the short ones (`prep.text._xxh3`), one call of the
        library per longer text."""
        from prep.text import _xxh3

        _, joined, offsets = self.compiled
        hashes, longer = _xxh3.short_hashes(joined, offsets)
        view = memoryview(joined)
        for i in longer.tolist():
            hashes[i] = xxhash.xxh3_64_intdigest(view[offsets[i] : offsets[i + 1]])
        return hashes


def normalised(texts: pa.StringArray | pa.LargeStringArray) -> tuple[np.ndarray, np.ndarray]:
    """Each text's words joined by one space (`" ".join(text.split())`, a null text as empty), UTF-8, one after
    another, and the int64 offsets of each in them: what content_hash hashes, from the compiled pass."""
    _, joined, offsets = _Batch(texts, None, ["content_hash"]).compiled
    return joined, offsets


def each_text(data: np.ndarray, offsets: np.ndarray) -> Iterator[memoryview]:
    """The texts data[offsets[i]:offsets[i + 1]], as views."""
    view, bounds = memoryview(data), offsets.tolist()
    return (view[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True))


_COMPUTE: dict[str, Callable[[_Batch], np.ndarray]] = {
    "num_bytes": lambda b: np.diff(b.utf8[1]),
    "num_chars": lambda b: b.stats["chars"],
    "num_words": lambda b: b.stats["words"],
    "num_lines": lambda b: b.stats["lines"],
    "num_tokens": lambda b: b.tokens[0],
    "chars_per_token": lambda b: _ratio(b.stats["chars"], b.tokens[0]),
    "mean_word_length": lambda b: b.ratio("word_chars", "words"),
    **{name: functools.partial(_Batch.ratio, num=name, den="chars") for name in _CLASS_BITS},
    "frac_dup_lines": lambda b: b.ratio("dup_lines", "non_empty_lines"),
    **{f"top_{n}gram_frac": functools.partial(_Batch.ratio, num=f"top{n}", den="word_chars") for n in (2, 3, 4)},
    "unique_token_ratio": _Batch.unique_token_ratio,
    "content_hash": _Batch.content_hash,
}
