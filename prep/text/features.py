"""Per-document features of a batch, computed for the whole batch at once.

Workers call `compute_features` on every chunk, so it must stay far cheaper than
tokenizing: the UTF-8 bytes of all texts are classified with numpy through lookup tables
over all of Unicode (built once per process; multi-byte characters are decoded at their
first byte) and counted per document with one `np.bincount`; words are cut at whitespace
bytes, and words, lines, n-grams and token ids are grouped by sorting integer keys. A Python
loop runs over documents only to hash them. A document's features depend on that document
alone, never on the rest of the batch, and are bit-for-bit reproducible.
"""

from __future__ import annotations

import functools
import hashlib
import unicodedata
from collections.abc import Callable, Sequence
from functools import cached_property

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from prep.errors import UserError

_F32, _I64 = pa.float32(), pa.int64()
_SPACE_LARGE = pa.scalar(" ", pa.large_string())
_KEY_LIMIT = 1 << 63  # integer keys stay below this (int64); tests lower it to check the fallbacks

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
        "BLAKE2b (digest_size=8, read little-endian) of the UTF-8 text with every run of whitespace "
        'made one space and the ends stripped (`" ".join(text.split())`); stable across runs and platforms',
    ),
}

FEATURES: dict[str, str] = {name: definition for name, (_, definition) in _SPECS.items()}
"""Feature name -> one-line definition, in a stable order."""

FEATURE_TYPES: dict[str, pa.DataType] = {name: type_ for name, (type_, _) in _SPECS.items()}
"""Feature name -> Arrow type of its column."""


def check_feature_names(names: Sequence[str]) -> list[str]:
    """Validate feature names early (pipeline load), so a typo fails before any work; drops repeats."""
    for name in names:
        if name not in FEATURES:
            raise UserError(f"unknown feature {name!r}; known: {', '.join(FEATURES)}")
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
        return {name: pa.array([], FEATURE_TYPES[name]) for name in names}
    batch = _Batch(texts, input_ids)
    return {
        name: pa.array(np.asarray(_COMPUTE[name](batch), FEATURE_TYPES[name].to_pandas_dtype()))
        for name in names
    }


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
    """Build the lookup tables now (about 0.3 s), e.g. once in the forkserver before workers fork."""
    _char_classes()


@functools.cache
def _char_classes() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(class id of every code point, class id of every byte value, bit mask of every class id).

    From this Python's Unicode database. Few distinct bit combinations occur, so a class id
    fits a uint8 and a per-document histogram of class ids is small. A byte value below 0x80
    is its own character; the others get the class of U+0000 (no bits), the class of a
    multi-byte character being set on its first byte only. Built on first use (~0.3 s).
    """
    bits = np.fromiter(
        (_BITS_OF_CATEGORY.get(unicodedata.category(chr(c)), 0) for c in range(0x110000)), np.uint8, 0x110000
    )
    bits[[c for c in range(0x110000) if chr(c).isspace()]] |= _SPACE
    bits[0x80:] |= _NON_ASCII
    for first, last in _CJK_BLOCKS:
        bits[first : last + 1] |= _CJK
    masks, class_ids = np.unique(bits, return_inverse=True)
    class_ids = class_ids.astype(np.uint8)
    return class_ids, np.concatenate((class_ids[:0x80], np.full(0x80, class_ids[0]))), masks


def _group(keys: np.ndarray, bound: int) -> tuple[np.ndarray, np.ndarray]:
    """(dense id of each key, occurrences of each key), aligned with int64 `keys`, all in [0, bound).

    Sorting the keys with their positions packed into the low bits is several times faster
    than `argsort` (numpy sorts plain integers with SIMD), so that is used whenever it fits.
    """
    m = len(keys)
    shift = max(m - 1, 1).bit_length()
    if bound << shift <= _KEY_LIMIT:
        packed = np.sort((keys << shift) | np.arange(m))
        order, keys = packed & ((1 << shift) - 1), packed >> shift
    else:
        order = np.argsort(keys)
        keys = keys[order]
    new = np.empty(m, bool)
    new[:1] = True
    np.not_equal(keys[1:], keys[:-1], out=new[1:])
    ids = np.empty(m, np.int64)
    ids[order] = np.cumsum(new) - 1
    return ids, np.diff(np.append(np.flatnonzero(new), m))[ids]


def _distinct_per_doc(lengths: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Distinct values among each document's `lengths[i]` consecutive non-negative integer `values`.

    Sorts (document, value) keys; uint32 keys where they fit sort about twice as fast.
    (`np.unique` is avoided: in numpy 2.x it hashes and is far slower here.)
    """
    width = int(values.max(initial=0)) + 1
    dtype = np.uint32 if len(lengths) * width <= 1 << 32 else np.int64
    keys = np.sort(
        np.repeat(np.arange(len(lengths), dtype=dtype) * dtype(width), lengths) + values.astype(dtype)
    )
    first = np.empty(len(keys), bool)
    first[:1] = True
    np.not_equal(keys[1:], keys[:-1], out=first[1:])
    return np.bincount(keys[first] // dtype(width), minlength=len(lengths))


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den in float64 (cast to float32 later), 0 where den is 0."""
    return np.divide(num, den, out=np.zeros(len(num)), where=den > 0)


class _Batch:
    """Lazily computed intermediates shared by the features of one batch."""

    def __init__(
        self, texts: pa.StringArray | pa.LargeStringArray, input_ids: pa.ListArray | pa.LargeListArray
    ) -> None:
        self.texts = texts.fill_null("") if texts.null_count else texts
        self.input_ids = input_ids
        self.n = len(texts)

    @cached_property
    def utf8(self) -> tuple[np.ndarray, np.ndarray]:
        """(UTF-8 bytes of all texts, int64 offsets of each text into them, from 0); handles slices."""
        offset_type = np.int64 if pa.types.is_large_string(self.texts.type) else np.int32
        _, offsets_buf, data_buf = self.texts.buffers()
        start = self.texts.offset
        offsets = np.frombuffer(offsets_buf, offset_type)[start : start + self.n + 1].astype(np.int64)
        data = np.frombuffer(data_buf, np.uint8) if data_buf is not None else np.zeros(0, np.uint8)
        return data[offsets[0] : offsets[-1]], offsets - offsets[0]

    @cached_property
    def byte_classes(self) -> np.ndarray:
        """Class id of the character starting at each byte; UTF-8 continuation bytes get the class with
        no bits. Working on bytes avoids compacting the buffer to characters first."""
        data, _ = self.utf8
        by_code_point, by_byte, _ = _char_classes()
        classes = np.take(by_byte, data)
        lead = np.flatnonzero(data >= 0xC0)  # first byte of a multi-byte character
        if len(lead):
            first = data[lead].astype(np.int32)
            size = 2 + (first >= 0xE0) + (first >= 0xF0)
            padded = np.concatenate((data, np.zeros(3, np.uint8)))  # continuation reads stay in bounds
            value = ((first & (0x7F >> size)) << 6) | (padded[lead + 1] & 0x3F)
            value = np.where(size > 2, (value << 6) | (padded[lead + 2] & 0x3F), value)
            value = np.where(size > 3, (value << 6) | (padded[lead + 3] & 0x3F), value)
            classes[lead] = by_code_point[np.minimum(value, 0x10FFFF)]  # invalid UTF-8 stays in the table
        return classes

    @cached_property
    def num_chars(self) -> np.ndarray:
        return np.asarray(pc.utf8_length(self.texts), np.int64)

    @cached_property
    def class_counts(self) -> np.ndarray:
        """Characters of each text having each class bit: shape (texts, 7), column i for bit 1 << i."""
        _, offsets = self.utf8
        _, _, masks = _char_classes()
        k = len(masks)
        doc_base = np.repeat(np.arange(self.n, dtype=np.int64) * k, np.diff(offsets))
        histogram = np.bincount(doc_base + self.byte_classes, minlength=self.n * k).reshape(self.n, k)
        return histogram @ ((masks[:, None].astype(np.int64) >> np.arange(7)) & 1)

    def class_fraction(self, bit: int) -> np.ndarray:
        return _ratio(self.class_counts[:, bit.bit_length() - 1], self.num_chars)

    @cached_property
    def byte_space(self) -> np.ndarray:
        """Whether each byte belongs to a whitespace character."""
        data, _ = self.utf8
        _, _, masks = _char_classes()
        space = np.take((masks & _SPACE) > 0, self.byte_classes)
        wide = np.flatnonzero(space & (data >= 0xC0))  # multi-byte whitespace: mark its other bytes too
        size = 2 + (data[wide] >= 0xE0) + (data[wide] >= 0xF0)
        for k in (1, 2, 3):
            space[wide[size > k] + k] = True
        return space

    @cached_property
    def words(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(first byte of every word, byte after its end, word offsets of each text)."""
        _, offsets = self.utf8
        space = self.byte_space
        text = ~space
        boundary = np.zeros(len(space) + 1, bool)  # a text starts (or everything ends) before byte i
        boundary[offsets] = True
        space_before = np.concatenate(([True], space[:-1]))
        space_after = np.concatenate((space[1:], [True]))
        starts = np.flatnonzero(text & (boundary[:-1] | space_before))
        ends = np.flatnonzero(text & (boundary[1:] | space_after)) + 1
        return starts, ends, np.searchsorted(starts, offsets)

    @cached_property
    def word_strings(self) -> pa.LargeStringArray:
        """Every word of every text, in order, as one string array (the texts without their whitespace)."""
        data, _ = self.utf8
        starts, ends, _ = self.words
        kept = data[~self.byte_space]
        offsets = np.concatenate(([0], np.cumsum(ends - starts)))
        return pa.LargeStringArray.from_buffers(len(starts), pa.py_buffer(offsets), pa.py_buffer(kept))

    @cached_property
    def word_chars(self) -> tuple[np.ndarray, np.ndarray]:
        """(cumulative characters of words, from 0, one more than words; characters in words per text)."""
        _, _, word_offsets = self.words
        lengths = np.asarray(pc.utf8_length(self.word_strings), np.int64)
        cumulative = np.concatenate(([0], np.cumsum(lengths)))
        return cumulative, np.diff(cumulative[word_offsets])

    @cached_property
    def word_docs(self) -> np.ndarray:
        """Text of every word."""
        _, _, word_offsets = self.words
        return np.repeat(np.arange(self.n, dtype=np.int64), np.diff(word_offsets))

    @cached_property
    def repeated_ngrams(self) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        """n -> (first word of every n-gram occurring more than once in its text, its count), n = 2, 3, 4.

        2-grams are keyed by (text, word, next word) over pairs inside one text. An n-gram can
        repeat only where the (n-1)-grams at its first and second word repeat, so a level only
        keys those positions, by (id of the (n-1)-gram, last word); ids are per text, and a
        position whose (n-1)-gram crosses texts has none, so nothing counts across texts.
        """
        word = np.asarray(pc.dictionary_encode(self.word_strings).indices, np.int64)
        doc, m = self.word_docs, len(word)
        width = int(word.max(initial=0)) + 1
        at = np.flatnonzero(doc[:-1] == doc[1:])
        if self.n * width * width <= _KEY_LIMIT:
            ids, counts = _group((doc[at] * width + word[at]) * width + word[at + 1], self.n * width * width)
        else:  # a huge batch: number words per text first, so that keys need not hold the text
            word, _ = _group(doc * width + word, self.n * width)
            width = m
            ids, counts = _group(word[at] * width + word[at + 1], width * width)
        result = {}
        for n in (2, 3, 4):
            if n > 2:
                repeated = np.zeros(m + 1, bool)
                repeated[at[counts >= 2]] = True
                previous = np.zeros(m, np.int64)
                previous[at] = ids
                at = np.flatnonzero(repeated[:-2] & repeated[1:-1])
                ids, counts = _group(previous[at] * width + word[at + n - 1], m * width)
            keep = counts >= 2
            result[n] = at[keep], counts[keep]
        return result

    def top_ngram_frac(self, n: int) -> np.ndarray:
        at, counts = self.repeated_ngrams[n]
        cumulative, total = self.word_chars
        covered = np.zeros(self.n, np.int64)
        if not len(at):
            return covered
        doc = self.word_docs[at]
        segment = np.flatnonzero(np.concatenate(([True], doc[1:] != doc[:-1])))
        top = np.maximum.reduceat(counts, segment)
        is_top = counts == np.repeat(top, np.diff(np.append(segment, len(at))))
        at, doc = at[is_top], doc[is_top]
        first = np.concatenate(([True], doc[1:] != doc[:-1]))  # positions ascend: the first to occur wins
        at, doc = at[first], doc[first]
        covered[doc] = top * (cumulative[at + n] - cumulative[at])
        return _ratio(covered, total)

    @cached_property
    def lines(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(lines of each text, non-empty lines of each text, those repeating an earlier line)."""
        pieces = pc.split_pattern(self.texts, "\n")
        per_text = np.asarray(pc.list_value_length(pieces), np.int64)
        content = pc.utf8_rtrim(pc.list_flatten(pieces), "\r")
        raw_length = np.asarray(pc.binary_length(pc.list_flatten(pieces)), np.int64)
        num_lines = per_text - (raw_length[np.cumsum(per_text) - 1] == 0)
        doc = np.repeat(np.arange(self.n, dtype=np.int64), per_text)
        non_empty = np.asarray(pc.binary_length(content), np.int64) > 0
        line_id = np.asarray(pc.dictionary_encode(content).indices)[non_empty]
        per_doc = np.bincount(doc[non_empty], minlength=self.n)
        return num_lines, per_doc, per_doc - _distinct_per_doc(per_doc, line_id)

    @cached_property
    def tokens(self) -> tuple[np.ndarray, np.ndarray]:
        """(tokens of each text, token ids of all texts in order)."""
        lengths = np.asarray(pc.list_value_length(self.input_ids).fill_null(0), np.int64)
        return lengths, np.asarray(pc.list_flatten(self.input_ids))

    def unique_token_ratio(self) -> np.ndarray:
        lengths, ids = self.tokens
        return _ratio(_distinct_per_doc(lengths, ids), lengths)

    def content_hash(self) -> np.ndarray:
        _, _, word_offsets = self.words
        joined = pc.binary_join(
            pa.LargeListArray.from_arrays(pa.array(word_offsets), self.word_strings), _SPACE_LARGE
        )
        _, offsets_buf, data_buf = joined.buffers()
        offsets = np.frombuffer(offsets_buf, np.int64)[: self.n + 1].tolist()
        data = memoryview(data_buf if data_buf is not None else b"")
        digests = [
            hashlib.blake2b(data[a:b], digest_size=8).digest()
            for a, b in zip(offsets[:-1], offsets[1:], strict=True)
        ]
        return np.frombuffer(b"".join(digests), "<u8")


_COMPUTE: dict[str, Callable[[_Batch], np.ndarray]] = {
    "num_bytes": lambda b: np.diff(b.utf8[1]),
    "num_chars": lambda b: b.num_chars,
    "num_words": lambda b: np.diff(b.words[2]),
    "num_lines": lambda b: b.lines[0],
    "num_tokens": lambda b: b.tokens[0],
    "chars_per_token": lambda b: _ratio(b.num_chars, b.tokens[0]),
    "mean_word_length": lambda b: _ratio(b.word_chars[1], np.diff(b.words[2])),
    **{name: functools.partial(_Batch.class_fraction, bit=bit) for name, bit in _CLASS_BITS.items()},
    "frac_dup_lines": lambda b: _ratio(b.lines[2], b.lines[1]),
    **{f"top_{n}gram_frac": functools.partial(_Batch.top_ngram_frac, n=n) for n in (2, 3, 4)},
    "unique_token_ratio": _Batch.unique_token_ratio,
    "content_hash": _Batch.content_hash,
}
