"""Per-document features of a batch, computed for the whole batch at once.

Workers call `compute_features` on every chunk, so it must stay far cheaper than
tokenizing: the UTF-8 bytes of all texts are classified with numpy through lookup tables
over all of Unicode (built once per process; multi-byte characters are decoded at their
first byte) and counted per document with `np.bincount`; words are cut at whitespace
bytes, and words, lines, n-grams and token ids are grouped by sorting integer keys. A Python
loop runs over documents only to hash them, and over windows of the bytes. A document's features
depend on that document alone, never on the rest of the batch, and are bit-for-bit reproducible.

Memory: one document may be as large as a batch (tens of MB), and then costs a few times its size
(about 4.5x with every feature): per-byte work runs over 1 MiB windows, per-word arrays are int32,
sorts happen in place, and Arrow's freed memory is handed back before numpy's big allocations.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import unicodedata
from collections.abc import Callable, Iterator, Sequence
from functools import cached_property

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from prep.errors import UserError
from prep.text.arrow import arrow_of, numpy_of, string_scalar
from prep.text.cache import cache_dir

_F32, _I64 = pa.float32(), pa.int64()
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
        return {name: arrow_of(np.zeros(0), FEATURE_TYPES[name]) for name in names}
    batch = _Batch(texts, input_ids)
    # n-gram features last: they release the word strings that content_hash needs
    computed = {name: _COMPUTE[name](batch) for name in sorted(names, key=lambda name: name.startswith("top_"))}
    return {name: arrow_of(np.asarray(computed[name]), FEATURE_TYPES[name]) for name in names}


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
    bits = _code_point_bits()
    masks, class_ids = np.unique(bits, return_inverse=True)
    class_ids = class_ids.astype(np.uint8)
    return class_ids, np.concatenate((class_ids[:0x80], np.full(0x80, class_ids[0]))), masks


def _code_point_bits() -> np.ndarray:
    """The class bits of every code point: computed once per Unicode database and kept in prep's cache directory
    (walking 1.1 M code points costs ~0.4 s, paid by every run's forkserver otherwise)."""
    recipe = repr((unicodedata.unidata_version, sorted(_BITS_OF_CATEGORY.items()), _CJK_BLOCKS,
                   (_ALPHA, _DIGIT, _UPPER, _SPACE, _PUNCT, _NON_ASCII, _CJK)))
    path = cache_dir() / f"code-point-classes-{hashlib.sha256(recipe.encode()).hexdigest()[:16]}.npy"
    with contextlib.suppress(OSError, ValueError):
        bits = np.load(path)
        if bits.shape == (0x110000,) and bits.dtype == np.uint8:
            return bits
    bits = np.fromiter(
        (_BITS_OF_CATEGORY.get(unicodedata.category(chr(c)), 0) for c in range(0x110000)), np.uint8, 0x110000
    )
    bits[[c for c in range(0x110000) if chr(c).isspace()]] |= _SPACE
    bits[0x80:] |= _NON_ASCII
    for first, last in _CJK_BLOCKS:
        bits[first : last + 1] |= _CJK
    with contextlib.suppress(OSError):  # a read-only home: computed again next time
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as f:
            np.save(f, bits)
        os.replace(tmp, path)
    return bits


def _index_type(m: int) -> type[np.signedinteger]:
    """The narrowest dtype that indexes `m` elements: per-word arrays of int32 halve their memory."""
    return np.int32 if m < 1 << 31 else np.int64


def _group(keys: np.ndarray, bound: int) -> tuple[np.ndarray, np.ndarray]:
    """(dense id of each key, occurrences of each key), aligned with int64 `keys`, all in [0, bound).

    `keys` is scratch space: it is overwritten, so that one huge document costs a few bytes per key.
    Sorting the keys with their positions packed into the low bits is several times faster than
    `argsort` (numpy sorts plain integers with SIMD), so that is used whenever it fits.
    """
    m = len(keys)
    index = _index_type(m)
    shift = max(m - 1, 1).bit_length()
    if bound << shift <= _KEY_LIMIT:
        keys <<= shift
        keys |= np.arange(m, dtype=index)
        keys.sort()
        order = np.empty(m, index)
        np.bitwise_and(keys, (1 << shift) - 1, out=order, casting="unsafe")
        keys >>= shift
        scratch = keys
    else:
        order = np.argsort(keys)
        scratch = keys[order]
        order = order.astype(index)
    new = np.empty(m, bool)
    new[:1] = True
    np.not_equal(scratch[1:], scratch[:-1], out=new[1:])
    ranks = np.cumsum(new, dtype=index, out=scratch.view(index)[:m])  # the sorted keys are no longer needed
    ranks -= 1
    ids = np.empty(m, index)
    ids[order] = ranks
    del ranks, scratch
    return ids, np.take(np.diff(np.append(np.flatnonzero(new), m)).astype(index), ids, out=order)


def _distinct_per_doc(lengths: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Distinct values among each document's `lengths[i]` consecutive non-negative integer `values`.

    Sorts (document, value) keys in place; uint32 keys where they fit sort about twice as fast.
    (`np.unique` is avoided: in numpy 2.x it hashes and is far slower here.)
    """
    width = int(values.max(initial=0)) + 1
    dtype = np.uint32 if len(lengths) * width <= 1 << 32 else np.int64
    keys = np.repeat(np.arange(len(lengths), dtype=dtype) * dtype(width), lengths)
    np.add(keys, values, out=keys, casting="unsafe")
    keys.sort()
    first = np.empty(len(keys), bool)
    first[:1] = True
    np.not_equal(keys[1:], keys[:-1], out=first[1:])
    return np.bincount(keys[first] // dtype(width), minlength=len(lengths))


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den in float64 (cast to float32 later), 0 where den is 0."""
    return np.divide(num, den, out=np.zeros(len(num)), where=den > 0)


_WINDOW = 1 << 20  # bytes scanned at a time, so that per-byte temporaries stay small for a huge document


class _Batch:
    """Lazily computed intermediates shared by the features of one batch.

    A single document may be as large as the batch (tens of MB), so full-length intermediates are
    few and narrow: per-byte work runs over windows of `_WINDOW` bytes, per-word arrays are int32,
    and sorts happen in place.
    """

    def __init__(
        self, texts: pa.StringArray | pa.LargeStringArray, input_ids: pa.ListArray | pa.LargeListArray
    ) -> None:
        self.texts = pc.fill_null(texts, string_scalar("", texts.type)) if texts.null_count else texts
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

    def _windows(self) -> Iterator[tuple[int, int, int, np.ndarray]]:
        """(start, end, first text, byte lengths of the texts from it) of each window of the bytes."""
        data, offsets = self.utf8
        for s in range(0, len(data), _WINDOW):
            e = min(s + _WINDOW, len(data))
            first = int(np.searchsorted(offsets, s, "right")) - 1
            last = int(np.searchsorted(offsets, e, "left"))
            yield s, e, first, np.diff(np.clip(offsets[first : last + 1], s, e))

    def _scan(self) -> None:
        """Class counts of each text and the whitespace mask of all bytes, in one pass over windows.

        The class of a character is set on its first byte, UTF-8 continuation bytes getting the
        class with no bits; multi-byte characters are decoded at their first byte. Working on bytes
        avoids compacting the buffer to characters first.
        """
        data, _ = self.utf8
        by_code_point, by_byte, masks = _char_classes()
        k = len(masks)
        is_space = (masks & _SPACE) > 0
        histogram = np.zeros((self.n, k), np.int64)
        space = np.zeros(len(data), bool)
        for s, e, first, lengths in self._windows():
            window = data[s:e]
            classes = np.take(by_byte, window)
            lead = np.flatnonzero(window >= 0xC0)  # first byte of a multi-byte character
            if len(lead):
                padded = np.zeros(e - s + 3, np.uint8)  # continuation reads stay in bounds
                padded[: min(e + 3, len(data)) - s] = data[s : e + 3]
                head = window[lead].astype(np.int32)
                size = 2 + (head >= 0xE0) + (head >= 0xF0)
                value = ((head & (0x7F >> size)) << 6) | (padded[lead + 1] & 0x3F)
                value = np.where(size > 2, (value << 6) | (padded[lead + 2] & 0x3F), value)
                value = np.where(size > 3, (value << 6) | (padded[lead + 3] & 0x3F), value)
                classes[lead] = by_code_point[np.minimum(value, 0x10FFFF)]  # invalid UTF-8 stays in the table
            space[s:e] |= np.take(is_space, classes)
            if len(lead):  # multi-byte whitespace: mark its other bytes too
                wide = lead[np.take(is_space, classes[lead])]
                wide_size = size[np.take(is_space, classes[lead])]
                for j in (1, 2, 3):
                    space[wide[wide_size > j] + s + j] = True
            doc_base = np.repeat(np.arange(len(lengths), dtype=np.intp) * k, lengths)
            doc_base += classes
            histogram[first : first + len(lengths)] += np.bincount(doc_base, minlength=len(lengths) * k).reshape(
                -1, k
            )
        self.__dict__["class_counts"] = histogram @ ((masks[:, None].astype(np.int64) >> np.arange(7)) & 1)
        self._space = space

    @cached_property
    def num_chars(self) -> np.ndarray:
        return numpy_of(pc.utf8_length(self.texts)).astype(np.int64)

    @cached_property
    def class_counts(self) -> np.ndarray:
        """Characters of each text having each class bit: shape (texts, 7), column i for bit 1 << i."""
        self._scan()
        return self.__dict__["class_counts"]

    def class_fraction(self, bit: int) -> np.ndarray:
        return _ratio(self.class_counts[:, bit.bit_length() - 1], self.num_chars)

    @cached_property
    def words(self) -> tuple[np.ndarray, pa.StringArray | pa.LargeStringArray]:
        """(word offsets of each text, every word of every text in order as one string array).

        The string array is the texts without their whitespace. Consumes the whitespace mask.
        """
        data, offsets = self.utf8
        if not hasattr(self, "_space"):
            self._scan()
        space, index = self._space, _index_type(len(data) + 1)
        del self._space
        lengths, counted, open_start = [], 0, None  # a word may go on into the next window
        word_offsets = np.zeros(len(offsets), np.int64)
        for s, e, _, _ in self._windows():
            text = ~space[s:e]
            boundary = np.zeros(e - s + 1, bool)  # a text starts (or everything ends) before byte i
            boundary[offsets[(offsets >= s) & (offsets <= e)] - s] = True
            before = space[s - 1 : e - 1] if s else np.concatenate(([True], space[: e - 1]))
            after = space[s + 1 : e + 1] if e < len(data) else np.concatenate((space[s + 1 :], [True]))
            starts = np.flatnonzero(text & (boundary[:-1] | before)) + s
            ends = np.flatnonzero(text & (boundary[1:] | after)) + (s + 1)
            here = (offsets >= s) & (offsets < e)
            word_offsets[here] = counted + np.searchsorted(starts, offsets[here])
            counted += len(starts)
            if open_start is not None:
                starts = np.concatenate(([open_start], starts))
            open_start = starts[-1] if len(starts) > len(ends) else None
            lengths.append((ends - starts[: len(ends)]).astype(index))
        word_offsets[offsets >= len(data)] = counted
        word_bytes = np.zeros(counted + 1, index)  # string offsets: cumulative bytes of the words
        if lengths:
            np.concatenate(lengths, out=word_bytes[1:])
        del lengths
        np.cumsum(word_bytes, out=word_bytes)
        kept = data[np.logical_not(space, out=space)]
        del space
        if index is np.int32:
            strings = pa.StringArray.from_buffers(len(word_bytes) - 1, pa.py_buffer(word_bytes), pa.py_buffer(kept))
        else:
            strings = pa.LargeStringArray.from_buffers(
                len(word_bytes) - 1, pa.py_buffer(word_bytes), pa.py_buffer(kept)
            )
        return word_offsets, strings

    @cached_property
    def word_lengths(self) -> np.ndarray:
        """Characters of every word."""
        _, strings = self.words
        return numpy_of(pc.utf8_length(strings))

    @cached_property
    def word_chars(self) -> np.ndarray:
        """Characters in words per text."""
        word_offsets, _ = self.words
        totals = np.zeros(self.n, np.int64)
        some = np.diff(word_offsets) > 0
        if some.any():
            totals[some] = np.add.reduceat(self.word_lengths, word_offsets[:-1][some], dtype=np.int64)
        return totals

    @cached_property
    def top_ngrams(self) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        """n -> (count of each text's most frequent word n-gram, 0 if it does not repeat; its first word).

        2-grams are keyed by (text, word, next word) at every word but the last; a pair that crosses
        texts gets a key of its own above all others, so it never repeats. An n-gram can repeat only
        where the (n-1)-grams at its first and second word repeat, so a level only keys those
        positions, by (id of the (n-1)-gram, last word); ids are per text, so nothing counts across texts.
        Needs the word strings only to number the words: they are released here (the n-gram features
        are computed last), as are the other full-length arrays of a level before the next.
        """
        word_offsets, strings = self.words
        self.word_lengths  # noqa: B018 -- needed later, computed before the strings go
        self.word_chars  # noqa: B018
        word = numpy_of(pc.dictionary_encode(strings).indices)
        self.__dict__["words"] = (word_offsets, None)
        del strings
        pa.default_memory_pool().release_unused()  # what Arrow freed can serve numpy now
        m = len(word)
        index = _index_type(m + 1)
        width = int(word.max(initial=0)) + 1
        last = word_offsets[1:] - 1  # the last word of each text
        crossing = np.unique(last[(last >= 0) & (last < m - 1)])
        huge = self.n * width * width > _KEY_LIMIT  # then number words per text first: keys need not hold it
        size = m if huge else max(m - 1, 0)
        keys = np.zeros(size, np.int64)
        if self.n > 1:
            keys += np.repeat(np.arange(self.n, dtype=index), np.diff(word_offsets))[:size]
        keys *= width
        keys += word[:size]
        if huge:
            word, _ = _group(keys, self.n * width)
            width = bound = m
            keys = word[:-1].astype(np.int64)
        else:
            bound = self.n * width * width
        keys *= width
        keys += word[1:]
        keys[crossing] = bound + crossing
        ids, counts = _group(keys, bound + m)
        del keys
        result = {2: self._first_top(None, counts, word_offsets)}
        at = None
        for n in (3, 4):
            repeated = np.zeros(m + 1, bool)
            repeated[slice(None, len(counts)) if at is None else at] = counts >= 2
            distinct = int(ids.max(initial=-1)) + 1
            previous = np.zeros(m, index)
            previous[slice(None, len(ids)) if at is None else at] = ids
            del ids, counts
            at = np.flatnonzero(repeated[:-2] & repeated[1:-1]).astype(index)
            del repeated
            keys = previous[at].astype(np.int64)
            del previous
            keys *= width
            keys += word[at + (n - 1)]
            ids, counts = _group(keys, distinct * width)
            del keys
            result[n] = self._first_top(at, counts, word_offsets)
        return result

    def _first_top(
        self, at: np.ndarray | None, counts: np.ndarray, word_offsets: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """(highest count of each text, 0 if below 2; first position with it) among ascending positions `at`
        (None: every word)."""
        scale = int(word_offsets[-1]) + 1  # score: count, then the earlier position, in one int64
        score = counts.astype(np.int64)
        score *= scale
        score += scale - 1
        score -= np.arange(len(counts)) if at is None else at
        score[counts < 2] = 0
        if at is None:
            begin, end = np.minimum(word_offsets[:-1], len(counts)), np.minimum(word_offsets[1:], len(counts))
        else:
            begin, end = np.searchsorted(at, word_offsets[:-1]), np.searchsorted(at, word_offsets[1:])
        best = np.zeros(self.n, np.int64)
        some = end > begin
        if some.any():
            best[some] = np.maximum.reduceat(score, begin[some])
        return best // scale, scale - 1 - best % scale

    def top_ngram_frac(self, n: int) -> np.ndarray:
        top, at = self.top_ngrams[n]
        covered = np.zeros(self.n, np.int64)
        has = top > 0
        if has.any():
            lengths = self.word_lengths
            chars = sum(lengths[at[has] + j].astype(np.int64) for j in range(n))
            covered[has] = top[has] * chars
        return _ratio(covered, self.word_chars)

    @cached_property
    def lines(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(lines of each text, non-empty lines of each text, those repeating an earlier line)."""
        pieces = pc.split_pattern(self.texts, "\n")
        per_text = numpy_of(pc.list_value_length(pieces)).astype(np.int64)
        content = pc.utf8_rtrim(pc.list_flatten(pieces), "\r")
        raw_length = numpy_of(pc.binary_length(pc.list_flatten(pieces))).astype(np.int64)
        del pieces
        num_lines = per_text - (raw_length[np.cumsum(per_text) - 1] == 0)
        del raw_length
        doc = np.repeat(np.arange(self.n, dtype=np.int64), per_text)
        non_empty = numpy_of(pc.binary_length(content)) > 0
        line_id = numpy_of(pc.dictionary_encode(content).indices)[non_empty]
        del content
        per_doc = np.bincount(doc[non_empty], minlength=self.n)
        pa.default_memory_pool().release_unused()  # what Arrow freed can serve numpy now
        return num_lines, per_doc, per_doc - _distinct_per_doc(per_doc, line_id)

    @cached_property
    def tokens(self) -> tuple[np.ndarray, np.ndarray]:
        """(tokens of each text, token ids of all texts in order)."""
        lengths = numpy_of(pc.list_value_length(self.input_ids), fill=0).astype(np.int64)
        return lengths, numpy_of(pc.list_flatten(self.input_ids))

    def unique_token_ratio(self) -> np.ndarray:
        lengths, ids = self.tokens
        return _ratio(_distinct_per_doc(lengths, ids), lengths)

    def content_hash(self) -> np.ndarray:
        word_offsets, strings = self.words
        words = pa.LargeListArray.from_arrays(arrow_of(word_offsets, pa.int64()), strings)
        joined = pc.binary_join(words, string_scalar(" ", strings.type))
        _, offsets_buf, data_buf = joined.buffers()
        offset_type = np.int64 if pa.types.is_large_string(joined.type) else np.int32
        offsets = np.frombuffer(offsets_buf, offset_type)[: self.n + 1].tolist()
        data = memoryview(data_buf if data_buf is not None else b"")
        digests = [
            hashlib.blake2b(data[a:b], digest_size=8).digest()
            for a, b in zip(offsets[:-1], offsets[1:], strict=True)
        ]
        return np.frombuffer(b"".join(digests), "<u8")


_COMPUTE: dict[str, Callable[[_Batch], np.ndarray]] = {
    "num_bytes": lambda b: np.diff(b.utf8[1]),
    "num_chars": lambda b: b.num_chars,
    "num_words": lambda b: np.diff(b.words[0]),
    "num_lines": lambda b: b.lines[0],
    "num_tokens": lambda b: b.tokens[0],
    "chars_per_token": lambda b: _ratio(b.num_chars, b.tokens[0]),
    "mean_word_length": lambda b: _ratio(b.word_chars, np.diff(b.words[0])),
    **{name: functools.partial(_Batch.class_fraction, bit=bit) for name, bit in _CLASS_BITS.items()},
    "frac_dup_lines": lambda b: _ratio(b.lines[2], b.lines[1]),
    **{f"top_{n}gram_frac": functools.partial(_Batch.top_ngram_frac, n=n) for n in (2, 3, 4)},
    "unique_token_ratio": _Batch.unique_token_ratio,
    "content_hash": _Batch.content_hash,
}
