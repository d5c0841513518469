"""The features' compiled pass (numba): every text-derived feature of a batch, two walks over each text's bytes.

Why compiled: the features need the character classes, the words, the lines and the repeats of
words, lines and word n-grams of each text. As numpy these are a dozen full-length passes with
temporaries and sorts of the whole batch (~40 ms per MiB); as loops per text, whose words and
lines are grouped while they are still in the CPU's cache, a few. Each text is walked once to count
its characters' classes (and learn whether it is valid UTF-8) and once to cut its words and lines,
byte by byte and without a branch per word. Equality is exact: a word or line of at most 7 bytes is
keyed by its bytes, a longer one by a hash, and equal hashes are compared byte for byte; n-grams
are keyed by exact integer keys of the word ids. numba caches the machine code beside this file
(`cache=True`), so a process pays only loading it.

Scratch arrays are sized for the longest text of the batch with `np.empty`, whose pages the
kernel touches only as far as a text needs them.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from prep.text._codes import SPACE_LEADS

# The helpers allocate nothing, so they are compiled without numba's reference counts: a call would otherwise count
# each array argument in and out atomically, which costs more than a short text's work (numba's `nrt` option).
_helper = njit(cache=True, nogil=True, _nrt=False)

# Columns of `text_stats`'s result: the 7 class bits of `prep.text.features` first (bit i in column i).
CHARS, WORDS, WORD_CHARS, LINES, NON_EMPTY_LINES, DUP_LINES, TOP2, TOP3, TOP4 = range(7, 16)
COLUMNS = 16
# What `text_stats` computes beyond the class counts; `flags` is a sum of these.
WANT_WORDS, WANT_NGRAMS, WANT_LINES, WANT_JOINED = 1, 2, 4, 8

_SPACE_BIT = 1 << 3  # prep.text.features._SPACE
_FNV_PRIME = np.uint64(0x100000001B3)
_FNV_SEED = np.uint64(0xCBF29CE484222325)
_ALL_BITS = np.uint64(0xFFFFFFFFFFFFFFFF)
_MIX = np.uint64(0x9E3779B97F4A7C15)  # Fibonacci hashing: the high bits of key * MIX pick a slot
_LONG = np.int64(8) << np.int64(56)  # top byte of a long string's key: short keys hold their length (0..7) there
_LOW56 = np.uint64((1 << 56) - 1)


@_helper
def _table_bits(m: int) -> int:
    """log2 of a hash table's size for m keys: at most three quarters full."""
    bits = 4
    while (1 << bits) * 3 < 4 * m:
        bits += 1
    return bits


@_helper
def _fresh_table(m, marks):  # noqa: ANN001, ANN201 - numba arrays
    """Size a table for m keys and mark its slots empty (-1 in `marks`): (slot mask, shift for `_slot`)."""
    bits = _table_bits(m)
    mask = (1 << bits) - 1
    marks[: mask + 1] = -1
    return mask, np.uint64(64 - bits)


@_helper
def _slot(h, shift):  # noqa: ANN001, ANN201
    return np.int64((np.uint64(h) * _MIX) >> shift)


@_helper
def _load8(text, at):  # noqa: ANN001, ANN201 - numba arrays
    """text[at:at+8] as an integer, text[at + 7] lowest."""
    return (np.uint64(text[at + 7]) | np.uint64(text[at + 6]) << np.uint64(8) | np.uint64(text[at + 5]) << np.uint64(16)
            | np.uint64(text[at + 4]) << np.uint64(24) | np.uint64(text[at + 3]) << np.uint64(32)
            | np.uint64(text[at + 2]) << np.uint64(40) | np.uint64(text[at + 1]) << np.uint64(48)
            | np.uint64(text[at]) << np.uint64(56))


@_helper
def _byte_hash(data, start, length):  # noqa: ANN001, ANN201 - numba arrays
    """A 64-bit hash of data[start:start+length], eight bytes per multiply (equal hashes are compared anyway)."""
    h = _FNV_SEED ^ np.uint64(length)
    k, end = start, start + length
    while k + 8 <= end:
        h = (h ^ _load8(data, k)) * _FNV_PRIME
        h ^= h >> np.uint64(29)
        k += 8
    while k < end:
        h = (h ^ np.uint64(data[k])) * _FNV_PRIME
        k += 1
    return h


@_helper
def _long_key(data, start, length, hash_mask):  # noqa: ANN001, ANN201 - numba arrays
    """The key of a byte string of 8 bytes or more: its hash, with the top byte 8 (see `_exact_ids`)."""
    return np.int64(_byte_hash(data, start, length) & hash_mask & _LOW56) | _LONG


@_helper
def _short_key(last, length):  # noqa: ANN001, ANN201
    """The exact key of a byte string of at most 7 bytes whose bytes are the low ones of `last` (the string's last
    byte lowest): the bytes themselves, with the length in the top byte."""
    return np.int64(np.uint64(last) & ((np.uint64(1) << np.uint64(8 * length)) - np.uint64(1))) | (
        np.int64(length) << np.int64(56))


@_helper
def _key(data, start, end, hash_mask=_ALL_BITS):  # noqa: ANN001, ANN201 - numba arrays
    """The key of data[start:end] for `_exact_ids`."""
    if end - start > 7:
        return _long_key(data, start, end - start, hash_mask)
    last = np.uint64(0)
    for k in range(start, end):
        last = last << np.uint64(8) | np.uint64(data[k])
    return _short_key(last, end - start)


@_helper
def _exact_ids(data, starts, ends, keys, m, slot_keys, slot_ids, first, ids, counts):  # noqa: ANN001, ANN201, PLR0913
    """Dense ids, in order of first occurrence, of the byte strings data[starts[i]:ends[i]], i < m, whose keys are
    keys[i] (`_short_key` for strings of at most 7 bytes, else `_long_key`): equal strings get equal ids, and
    counts[id] how often each occurs. Returns how many are distinct. Equal keys of long strings are compared byte
    for byte (tests make every hash collide with `_long_key`'s `hash_mask` 0)."""
    mask, shift = _fresh_table(m, slot_ids)
    distinct = 0
    for i in range(m):
        key = keys[i]
        s = _slot(key, shift)
        while True:
            g = slot_ids[s]
            if g < 0:
                slot_keys[s] = key
                slot_ids[s] = distinct
                first[distinct] = i
                counts[distinct] = 1
                g = distinct
                distinct += 1
                break
            if slot_keys[s] == key:
                if key < _LONG:
                    counts[g] += 1
                    break
                f = first[g]
                length = ends[i] - starts[i]
                if ends[f] - starts[f] == length:
                    a, b = starts[f], starts[i]
                    k = 0
                    while k < length and data[a + k] == data[b + k]:
                        k += 1
                    if k == length:
                        counts[g] += 1
                        break
            s = (s + 1) & mask
        ids[i] = g
    return distinct


@_helper
def _group(keys, m, slot_keys, slot_ids, ids, counts):  # noqa: ANN001, ANN201
    """Dense ids of the non-negative int64 keys[:m] into ids[:m], and the size of each group into counts.
    Returns how many are distinct."""
    mask, shift = _fresh_table(m, slot_keys)
    distinct = 0
    for i in range(m):
        k = keys[i]
        s = _slot(k, shift)
        while True:
            t = slot_keys[s]
            if t == k:
                g = slot_ids[s]
                counts[g] += 1
                break
            if t < 0:
                slot_keys[s] = k
                slot_ids[s] = distinct
                counts[distinct] = 1
                g = distinct
                distinct += 1
                break
            s = (s + 1) & mask
        ids[i] = g
    return distinct


@_helper
def _chars(data, a, e):  # noqa: ANN001, ANN201 - numba arrays
    """Characters of data[a:e], which starts at a character, stepping as `text_stats` does (a lead byte takes its
    sequence's length whatever follows; a stray continuation byte is no character)."""
    chars = 0
    k = a
    while k < e:
        c = data[k]
        chars += (c & 0xC0) != 0x80
        k += 1 if c < 0xC0 else 2 + (c >= 0xE0) + (c >= 0xF0)
    return chars


@_helper
def _top(ids, counts, at, p, text, w_start, w_end, n):  # noqa: ANN001, ANN201, PLR0913
    """Characters covered by the most frequent of p n-grams (ids, at ascending word positions `at`): its count
    times its words' characters; 0 when none repeats. Ties go to the first to occur."""
    best, where = 1, -1
    for q in range(p):
        c = counts[ids[q]]
        if c > best:
            best, where = c, at[q]
    if where < 0:
        return 0
    chars = 0
    for j in range(where, where + n):
        chars += _chars(text, w_start[j], w_end[j])
    return best * chars


@_helper
def _top_ngrams(text, w_start, w_end, w_id, w_count, m, distinct_words, out_row, scratch):  # noqa: ANN001, PLR0913
    """The covered characters of the top 2-, 3- and 4-gram of one text's m words (ids w_id, w_count[id] the
    times each word occurs).

    An n-gram can repeat only where the (n-1)-grams at its first and second word both repeat (for 2-grams: both
    words), so a level keys only those positions, by (id of the (n-1)-gram there, last word): exact integer keys.
    A level's positions `at` ascend, so the (n-1)-gram at the next word is the next entry, if any.
    """
    keys, ids, counts, at, slot_keys, slot_ids = scratch  # ids and counts must not be w_start and w_end
    width = np.int64(distinct_words)
    p = 0
    for i in range(m - 1):  # branch-free: the entry is kept only if both words repeat
        keys[p] = w_id[i] * width + w_id[i + 1]
        at[p] = i
        p += (w_count[w_id[i]] >= 2) & (w_count[w_id[i + 1]] >= 2)
    for n in (2, 3, 4):
        if n > 2:
            q_new = 0
            for q in range(p - 1):
                i = at[q]
                if at[q + 1] == i + 1 and counts[ids[q]] >= 2 and counts[ids[q + 1]] >= 2:
                    keys[q_new] = ids[q] * width + w_id[i + n - 1]
                    at[q_new] = i
                    q_new += 1
            p = q_new
        _group(keys, p, slot_keys, slot_ids, ids, counts)
        out_row[TOP2 + n - 2] = _top(ids, counts, at, p, text, w_start, w_end, n)


@_helper
def _char_at(text, i):  # noqa: ANN001, ANN201 - numba arrays
    """(code point, bytes) of the character whose first byte is text[i]. A lead byte takes its sequence's length
    whatever follows; cut short by the text's end, the bytes left are code point 0. A stray continuation byte is
    code point -1: part of a word, but no character."""
    c = np.int64(text[i])
    if c < 0x80:
        return c, 1
    if c < 0xC0:
        return np.int64(-1), 1
    step = 2 + (c >= 0xE0) + (c >= 0xF0)
    if i + step > len(text):
        return np.int64(0), len(text) - i
    if step == 2:
        return ((c & 0x1F) << 6) | (text[i + 1] & 0x3F), step
    if step == 3:
        return ((c & 0x0F) << 12) | ((text[i + 1] & 0x3F) << 6) | (text[i + 2] & 0x3F), step
    cp = ((c & 0x07) << 18) | ((text[i + 1] & 0x3F) << 12) | ((text[i + 2] & 0x3F) << 6) | (text[i + 3] & 0x3F)
    return min(cp, 0x10FFFF), step


@_helper
def _count_classes(text, class_of, ascii_counts, class_counts):  # noqa: ANN001, ANN201 - numba arrays
    """Count the text's ASCII characters by byte and the others by class (`class_of`); return whether the text is
    valid UTF-8, so that `_cut` may walk it byte by byte."""
    regular = True
    i, size = 0, len(text)
    while i < size:
        c = text[i]
        if c < 0x80:
            ascii_counts[c] += 1
            i += 1
            continue
        cp, step = _char_at(text, i)
        if cp < 0:
            regular = False
        else:
            class_counts[class_of[cp]] += 1
            regular &= step == 2 + (c >= 0xE0) + (c >= 0xF0)
            for k in range(i + 1, i + step):
                regular &= (text[k] & 0xC0) == 0x80
        i += step
    return regular


@njit(cache=True, nogil=True, inline="always", _nrt=False)
def _cut(text, kinds, class_of, masks, w_start, w_end, want_lines, l_start, l_end, want_joined, joined, j):  # noqa: ANN001, ANN201, PLR0913
    """Where the text's words (and, if wanted, its non-empty lines, trailing "\\r" removed) start and end, and, if
    wanted, its words joined by one space written to joined[j:]; return (words, non-empty lines, where the last line
    starts, end of the joined words). `kinds` says of each byte: 0 not whitespace, 1 ASCII
    whitespace, 2 decode the character it starts and look up its class (`_KINDS_UTF8` for valid UTF-8, where only
    the lead bytes of whitespace outside ASCII need it, else `_KINDS_ANY`). No branch per word: each slot is
    written at every character until its word starts (or ends) and the count moves on."""
    m = me = 0  # words started, words ended
    prev_space = np.int64(1)
    line_start = 0
    ln = 0
    i, size = 0, len(text)
    while i < size:
        c = text[i]
        step = 1
        space = kinds[c]
        if space > 1:
            cp, step = _char_at(text, i)
            space = np.int64(cp >= 0 and (masks[class_of[cp]] & _SPACE_BIT) != 0)
        starts = (1 - space) & prev_space
        if want_joined:
            joined[j] = 0x20
            j += starts & (m > 0)
            if step == 1:
                joined[j] = c
                j += 1 - space
            elif not space:
                for k in range(i, i + step):
                    joined[j] = text[k]
                    j += 1
        w_start[m] = i
        m += starts
        w_end[me] = i
        me += space & (1 - prev_space)
        prev_space = space
        if c == 0x0A and want_lines:
            e = i
            while e > line_start and text[e - 1] == 0x0D:
                e -= 1
            l_start[ln], l_end[ln] = line_start, e
            ln += e > line_start
            line_start = i + 1
        i += step
    if not prev_space:  # the end of the text ends its last word
        w_end[me] = size
    return m, ln, line_start, j


@_helper
def _word_keys(text, w_start, w_end, m, w_key):  # noqa: ANN001 - numba arrays
    """`_exact_ids`'s key of each word, from the 8 bytes that end it and, for one of 8 to 16 bytes, the 8 that start
    it (all its bytes): no loop per word but for the rare longer ones, hashed whole (keys that stood for only
    part of a word would make a text of many long words alike at both ends cost a comparison per pair)."""
    for k in range(m):
        a, e = w_start[k], w_end[k]
        length = e - a
        if e < 8 or length > 16:
            w_key[k] = _key(text, a, e)
            continue
        last = _load8(text, e - 8)
        if length <= 7:
            w_key[k] = _short_key(last, length)
        else:
            h = (last * _FNV_PRIME ^ _load8(text, a) ^ np.uint64(length)) * _MIX
            w_key[k] = np.int64((h ^ (h >> np.uint64(31))) & _LOW56) | _LONG


@njit(cache=True, nogil=True)
def text_stats(data, offsets, class_of, masks, flags, joined, joined_offsets):  # noqa: ANN001, ANN201, PLR0913
    """Per text: characters having each class bit (`class_of`: the class of every code point, `masks`: the bits of
    each class), and the
    columns named above that `flags` asks for. With WANT_JOINED, each text's words joined by one space
    (`" ".join(text.split())`) go into `joined`, text i at joined[joined_offsets[i]:joined_offsets[i + 1]].

    Characters are counted at their first byte; a stray continuation byte is part of a word but no character.
    Each text is walked twice while it is in cache: once to count classes, once to cut words and lines.
    """
    n = len(offsets) - 1
    out = np.zeros((n, COLUMNS), np.int64)
    want_words = (flags & (WANT_WORDS | WANT_NGRAMS | WANT_JOINED)) != 0
    want_ngrams = (flags & WANT_NGRAMS) != 0
    want_lines = (flags & WANT_LINES) != 0
    want_joined = (flags & WANT_JOINED) != 0
    longest = 0
    for d in range(n):
        longest = max(longest, offsets[d + 1] - offsets[d])
    cap_w = longest // 2 + 2 if want_words or want_lines else 1  # a text of L bytes has at most L // 2 + 1 words
    cap_n = cap_w if want_ngrams else 1
    cap_l = longest + 2 if want_lines else 1
    cap = max(cap_n, cap_l)
    # Positions are int32 from the text's start (texts < 2 GiB); pages of these arrays are touched only as far as a
    # text needs them. Per word 32 bytes, per line 24, the table 12 a slot; the n-gram levels reuse word arrays.
    w_start = np.empty(cap_w, np.int32)
    w_end = np.empty(cap_w, np.int32)
    w_key = np.empty(cap_n, np.int64)
    w_id = np.empty(cap_n, np.int32)
    w_count = np.empty(cap_n, np.int32)
    at = np.empty(cap_n, np.int32)
    l_start = np.empty(cap_l, np.int32)
    l_end = np.empty(cap_l, np.int32)
    l_key = np.empty(cap_l, np.int64)
    l_id = np.empty(cap_l, np.int32)
    l_count = np.empty(cap_l, np.int32)
    slots = 1 << _table_bits(cap)
    slot_keys = np.empty(slots, np.int64)
    slot_ids = np.empty(slots, np.int32)
    first = np.empty(cap, np.int32)
    ascii_counts = np.zeros(128, np.int64)
    class_counts = np.zeros(len(masks), np.int64)
    kinds_utf8 = np.zeros(256, np.int64)  # see `_cut`
    for c in range(128):
        kinds_utf8[c] = (masks[class_of[c]] & _SPACE_BIT) != 0
    for c in SPACE_LEADS:
        kinds_utf8[c] = 2
    kinds_any = kinds_utf8.copy()
    kinds_any[0x80:] = 2
    j = 0
    for d in range(n):
        text = data[offsets[d] : offsets[d + 1]]
        size = len(text)
        class_counts[:] = 0
        regular = _count_classes(text, class_of, ascii_counts, class_counts)
        newlines = ascii_counts[0x0A]
        row = out[d]
        for c in range(128):
            class_counts[class_of[c]] += ascii_counts[c]
        ascii_counts[:] = 0
        for v in range(len(masks)):
            if class_counts[v]:
                row[CHARS] += class_counts[v]
                for bit in range(7):
                    if (masks[v] >> bit) & 1:
                        row[bit] += class_counts[v]
        row[WORD_CHARS] = row[CHARS] - row[3]
        if not (want_words or want_lines):
            continue
        if want_joined:
            joined_offsets[d] = j
        kinds = kinds_utf8 if regular else kinds_any
        # want_joined as a constant, so that the loop without it compiles without its work
        if want_joined:
            m, ln, line_start, j = _cut(text, kinds, class_of, masks, w_start, w_end, want_lines, l_start, l_end,
                                        True, joined, j)
        else:
            m, ln, line_start, j = _cut(text, kinds, class_of, masks, w_start, w_end, want_lines, l_start, l_end,
                                        False, joined, j)
        row[WORDS] = m
        if want_lines:
            if size > line_start:  # the piece after the last newline
                e = size
                while e > line_start and text[e - 1] == 0x0D:
                    e -= 1
                l_start[ln], l_end[ln] = line_start, e
                ln += e > line_start
                newlines += 1
            row[LINES] = newlines
            row[NON_EMPTY_LINES] = ln
            for k in range(ln):
                l_key[k] = _key(text, l_start[k], l_end[k])
            if ln:
                row[DUP_LINES] = ln - _exact_ids(text, l_start, l_end, l_key, ln, slot_keys, slot_ids, first, l_id,
                                                 l_count)
        if want_ngrams and m >= 2:
            _word_keys(text, w_start, w_end, m, w_key)
            distinct = _exact_ids(text, w_start, w_end, w_key, m, slot_keys, slot_ids, first, w_id, w_count)
            _top_ngrams(text, w_start, w_end, w_id, w_count, m, distinct, row,
                        (w_key, first, w_count, at, slot_keys, slot_ids))
    if want_joined:
        joined_offsets[n] = j
    return out


@njit(cache=True, nogil=True)
def distinct_tokens(ids, offsets):  # noqa: ANN001, ANN201 - numba arrays
    """Distinct token ids of each text (ids[offsets[i]:offsets[i + 1]]): a stamp per id value when the
    vocabulary is small enough for an array, else a hash table per text."""
    n = len(offsets) - 1
    out = np.zeros(n, np.int64)
    top = 0
    for v in ids:
        top = max(top, np.int64(v))
    if top < 1 << 24:
        seen = np.zeros(top + 1, np.int32)
        for d in range(n):
            count = 0
            for i in range(offsets[d], offsets[d + 1]):  # no branch: a mispredicted one per new id costs more
                v = ids[i]
                count += seen[v] != d + 1
                seen[v] = d + 1
            out[d] = count
        return out
    longest = 0
    for d in range(n):
        longest = max(longest, offsets[d + 1] - offsets[d])
    keys = np.empty(longest, np.int64)
    groups = np.empty(longest, np.int64)
    counts = np.empty(longest, np.int64)
    slots = 1 << _table_bits(longest)
    slot_keys = np.empty(slots, np.int64)
    slot_ids = np.empty(slots, np.int64)
    for d in range(n):
        m = offsets[d + 1] - offsets[d]
        for k in range(m):
            keys[k] = ids[offsets[d] + k]
        out[d] = _group(keys, m, slot_keys, slot_ids, groups, counts)
    return out
