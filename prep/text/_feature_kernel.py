"""The features' compiled pass (numba): every text-derived feature of a batch, one walk over each text's characters.

Why compiled: the features need the character classes, the words, the lines and the repeats of
words, lines and word n-grams of each text. As numpy these are a dozen full-length passes with
temporaries and sorts of the whole batch (~40 ms per MiB); as loops per text, whose words and
lines are grouped while they are still in the CPU's cache, a few. Each text is walked once,
character by character, to count its characters' classes and cut its words without a branch per
word; its lines are found 8 bytes at a time and keyed in a pass of their own, and its joined words
(content_hash) are copied word by word, only for the features that need them. Equality is exact: a
word or line of at most 7 bytes is keyed by its bytes, a longer one by a hash, and equal hashes are
compared byte for byte; n-grams are keyed by exact integer keys of the word ids. numba caches the
machine code beside this file (`cache=True`), so a process pays only loading it.

Scratch arrays are sized for the longest text of the batch with `np.empty`, whose pages the
kernel touches only as far as a text needs them.
"""

from __future__ import annotations

import numpy as np

from prep.text._numba import njit, trailing_zeros

# The helpers allocate nothing, so they are compiled without numba's reference counts: a call would otherwise count
# each array argument in and out atomically, which costs more than a short text's work (numba's `nrt` option).
_helper = njit(cache=True, nogil=True, _nrt=False)

# Columns of `text_stats`'s result: the 7 class bits of `prep.text.features` first (bit i in column i).
CHARS, WORDS, WORD_CHARS, LINES, NON_EMPTY_LINES, DUP_LINES, TOP2, TOP3, TOP4 = range(7, 16)
COLUMNS = 16
# What `text_stats` computes beyond the class counts; `flags` is a sum of these.
WANT_WORDS, WANT_NGRAMS, WANT_LINES, WANT_JOINED = 1, 2, 4, 8

_SPACE_SHIFT, _NON_ASCII_SHIFT = 3, 5  # the bits of prep.text.features._SPACE and _NON_ASCII
_FNV_PRIME = np.uint64(0x100000001B3)
_FNV_SEED = np.uint64(0xCBF29CE484222325)
_ALL_BITS = np.uint64(0xFFFFFFFFFFFFFFFF)
_MIX = np.uint64(0x9E3779B97F4A7C15)  # Fibonacci hashing: the high bits of key * MIX pick a slot
_LONG = np.int64(8) << np.int64(56)  # top byte of a long string's key: short keys hold their length (0..7) there
_LOW56 = np.uint64((1 << 56) - 1)
_ONES, _HIGHS = np.uint64(0x0101010101010101), np.uint64(0x8080808080808080)
_NEWLINES = np.uint64(0x0A0A0A0A0A0A0A0A)


@_helper
def _table_bits(m: int) -> int:
    """log2 of a hash table's size for m keys: at most three quarters full."""
    bits = 4
    while (1 << bits) * 3 < 4 * m:
        bits += 1
    return bits


@_helper
def _fresh_table(m, marks):  # noqa: ANN001, ANN201 - numba arrays
    """Size a table for m keys and mark its slots empty (-1 in `marks`): (slot mask, shift for `_slot`), unsigned
    as the slots (see `_load8`)."""
    bits = _table_bits(m)
    mask = (1 << bits) - 1
    marks[: mask + 1] = -1
    return np.uint64(mask), np.uint64(64 - bits)


@_helper
def _slot(h, shift):  # noqa: ANN001, ANN201
    return (np.uint64(h) * _MIX) >> shift


@_helper
def _load8(text, at):  # noqa: ANN001, ANN201 - numba arrays
    """text[at:at+8] as an integer, text[at + 7] lowest: one load (an unsigned index spares each byte numba's check
    for a negative one, which keeps LLVM from merging the eight)."""
    u = np.uint64(at)
    return (np.uint64(text[u + np.uint64(7)]) | np.uint64(text[u + np.uint64(6)]) << np.uint64(8)
            | np.uint64(text[u + np.uint64(5)]) << np.uint64(16) | np.uint64(text[u + np.uint64(4)]) << np.uint64(24)
            | np.uint64(text[u + np.uint64(3)]) << np.uint64(32) | np.uint64(text[u + np.uint64(2)]) << np.uint64(40)
            | np.uint64(text[u + np.uint64(1)]) << np.uint64(48) | np.uint64(text[u]) << np.uint64(56))


@_helper
def _load8_low(text, at):  # noqa: ANN001, ANN201 - numba arrays
    """text[at:at+8] as an integer, text[at] lowest: one load, as `_load8`."""
    u = np.uint64(at)
    return (np.uint64(text[u]) | np.uint64(text[u + np.uint64(1)]) << np.uint64(8)
            | np.uint64(text[u + np.uint64(2)]) << np.uint64(16) | np.uint64(text[u + np.uint64(3)]) << np.uint64(24)
            | np.uint64(text[u + np.uint64(4)]) << np.uint64(32) | np.uint64(text[u + np.uint64(5)]) << np.uint64(40)
            | np.uint64(text[u + np.uint64(6)]) << np.uint64(48) | np.uint64(text[u + np.uint64(7)]) << np.uint64(56))


@_helper
def _byte_hash(data, start, length):  # noqa: ANN001, ANN201 - numba arrays
    """A 64-bit hash of data[start:start+length], length >= 8 (equal hashes are compared anyway): two independent
    lanes of 8 bytes per multiply, and the last 8 bytes loaded whole (overlapping those before), not byte by byte."""
    h = _FNV_SEED ^ np.uint64(length)
    g = _MIX
    k, end = start, start + length
    while k + 16 <= end:
        h = (h ^ _load8(data, k)) * _FNV_PRIME
        g = (g ^ _load8(data, k + 8)) * _MIX
        h ^= h >> np.uint64(29)
        g ^= g >> np.uint64(29)
        k += 16
    if k + 8 <= end:
        h = (h ^ _load8(data, k)) * _FNV_PRIME
        h ^= h >> np.uint64(29)
    h = (h ^ (g >> np.uint64(29)) ^ _load8(data, end - 8)) * _MIX
    return h ^ (h >> np.uint64(32))


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
    if end >= 8:
        return _short_key(_load8(data, end - 8), end - start)
    last = np.uint64(0)
    for k in range(start, end):
        last = last << np.uint64(8) | np.uint64(data[k])
    return _short_key(last, end - start)


@_helper
def _same(data, a, b, length):  # noqa: ANN001, ANN201 - numba arrays
    """Whether data[a:a+length] == data[b:b+length], length >= 8: 8 bytes at a time, the last 8 loaded whole."""
    k = 0
    while k + 8 < length:
        if _load8(data, a + k) != _load8(data, b + k):
            return False
        k += 8
    return _load8(data, a + length - 8) == _load8(data, b + length - 8)


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
                    counts[np.uint64(g)] += 1
                    break
                f = first[np.uint64(g)]
                length = ends[i] - starts[i]
                if ends[f] - starts[f] == length and _same(data, starts[f], starts[i], length):
                    counts[np.uint64(g)] += 1
                    break
            s = (s + np.uint64(1)) & mask
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
                counts[np.uint64(g)] += 1
                break
            if t < 0:
                slot_keys[s] = k
                slot_ids[s] = distinct
                counts[distinct] = 1
                g = distinct
                distinct += 1
                break
            s = (s + np.uint64(1)) & mask
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
        c = counts[np.uint64(ids[q])]
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
        keys[np.uint64(p)] = w_id[i] * width + w_id[i + 1]
        at[np.uint64(p)] = i
        p += (w_count[np.uint64(w_id[i])] >= 2) & (w_count[np.uint64(w_id[i + 1])] >= 2)
    for n in (2, 3, 4):
        if n > 2:
            q_new = 0
            for q in range(p - 1):  # branch-free, as above
                i = at[q]
                keys[np.uint64(q_new)] = ids[q] * width + w_id[np.uint64(i + n - 1)]
                at[np.uint64(q_new)] = i
                q_new += (at[q + 1] == i + 1) & (counts[np.uint64(ids[q])] >= 2) & (counts[np.uint64(ids[q + 1])] >= 2)
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


@njit(cache=True, nogil=True, inline="always", _nrt=False)
def _bound(i, space, prev_space, m, me, w_start, w_end):  # noqa: ANN001, ANN201, PLR0913 - numba arrays and scalars
    """Note the character at i, a space or not, in the word bounds: the slots of the next word's start and end are
    written at every character, and the counts move on where a word starts or ends (no branch per word). Returns
    (words started, words ended, whether this was a space)."""
    w_start[np.uint64(m)] = i
    w_end[np.uint64(me)] = i
    return m + ((1 - space) & prev_space), me + (space & (1 - prev_space)), space


@njit(cache=True, nogil=True, inline="always", _nrt=False)
def _walk(text, packed, class_of, space_of, class_counts, row, want_cut, w_start, w_end):  # noqa: ANN001, ANN201, PLR0913
    """One walk over the text, character by character: count its ASCII characters' class bits into `row` (through
    `packed`) and its other characters by class into `class_counts`; if `want_cut`, also note where its words start
    and end (w_start, w_end) and return how many there are.

    `packed[c]` holds the class bits of ASCII byte c as one 8-bit counter each (bit k in bits 8k..8k+7; the
    non-ASCII bit, which no ASCII byte has, counts the ASCII characters): one add per byte counts them all, with no
    store and load through memory that a histogram pays where the same byte recurs; the counters are emptied into
    `row` every 255 bytes. Counting and cutting in one walk decode each character above ASCII once. A lead byte
    takes its sequence's length whatever follows (`_char_at`); a stray continuation byte is part of a word but no
    character. No branch per word: each slot is written at every character until its word starts (or ends) and
    the count moves on."""
    m = me = 0  # words started, words ended
    prev_space = np.int64(1)
    i, size = 0, len(text)
    while i < size:
        acc = np.uint64(0)
        block_end = min(i + 255, size)
        while i < block_end:
            c = text[np.uint64(i)]  # unsigned indices: no check for a negative one (see `_load8`)
            if c < 0x80:
                bits = packed[c]
                acc += bits
                if want_cut:
                    space = np.int64((bits >> np.uint64(8 * _SPACE_SHIFT)) & np.uint64(1))
                    m, me, prev_space = _bound(i, space, prev_space, m, me, w_start, w_end)
                i += 1
                continue
            cp, step = _char_at(text, i)
            space = np.int64(0)
            if cp >= 0:
                cls = class_of[cp]
                class_counts[cls] += 1
                space = np.int64(space_of[cls])
            if want_cut:
                m, me, prev_space = _bound(i, space, prev_space, m, me, w_start, w_end)
            i += step
        for bit in range(7):
            row[CHARS if bit == _NON_ASCII_SHIFT else bit] += np.int64((acc >> np.uint64(8 * bit)) & np.uint64(0xFF))
    if want_cut and not prev_space:  # the end of the text ends its last word
        w_end[me] = size
    return m


@_helper
def _join(text, w_start, w_end, m, joined, j):  # noqa: ANN001, ANN201 - numba arrays
    """Write the text's m words joined by one space to joined[j:]; return where they end. A word is copied in steps
    of 8 bytes (no branch per byte) where the text and `joined` have 8 bytes left: the bytes past its end are
    overwritten by what follows (a space, the next word, the next text)."""
    size, cap = len(text), len(joined)
    for k in range(m):
        if k:
            joined[j] = 0x20
            j += 1
        a, e = w_start[k], w_end[k]
        while a < e:
            if a + 8 <= size and j + 8 <= cap:
                for t in range(8):  # 8 byte copies (the compiler cannot merge them: the arrays might overlap)
                    joined[np.uint64(j + t)] = text[np.uint64(a + t)]
                step = min(8, e - a)
            else:
                joined[j] = text[a]
                step = 1
            a += step
            j += step
    return j


@_helper
def _lines(text, l_start, l_end, l_key):  # noqa: ANN001, ANN201 - numba arrays
    """Where the text's non-empty lines (trailing "\\r" removed) start and end, and their `_exact_ids` keys; returns
    (non-empty lines, lines). Newlines are found 8 bytes at a time (the lowest byte of a word equal to "\\n" is
    the lowest one flagged by the zero-byte test of the word xor "\\n" * 8), apart from the walk over characters,
    whose every byte would otherwise test for one."""
    size = len(text)
    ln = lines = 0
    line_start = i = 0
    while i < size:
        while i + 8 <= size:
            x = _load8_low(text, i) ^ _NEWLINES
            hit = (x - _ONES) & ~x & _HIGHS
            if hit:
                i += trailing_zeros(hit) >> 3
                break
            i += 8
        while i < size and text[np.uint64(i)] != 0x0A:
            i += 1
        e = i
        while e > line_start and text[np.uint64(e - 1)] == 0x0D:
            e -= 1
        if e > line_start:
            l_start[ln], l_end[ln] = line_start, e
            l_key[ln] = _key(text, line_start, e)
            ln += 1
        lines += 1
        line_start = i = i + 1
    return ln, lines


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
    Each text's parts are computed one after another while it is in cache. The result holds a column per row
    (text d's column k at [k, d]): each column is read whole, and a strided one cost numpy ~10x to divide.
    """
    n = len(offsets) - 1
    out = np.zeros((COLUMNS, n), np.int64)
    want_words = (flags & (WANT_WORDS | WANT_NGRAMS | WANT_JOINED)) != 0
    want_ngrams = (flags & WANT_NGRAMS) != 0
    want_lines = (flags & WANT_LINES) != 0
    want_joined = (flags & WANT_JOINED) != 0
    longest = 0
    for d in range(n):
        longest = max(longest, offsets[d + 1] - offsets[d])
    cap_w = longest // 2 + 2 if want_words else 1  # a text of L bytes has at most L // 2 + 1 words
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
    class_counts = np.zeros(len(masks), np.int64)
    space_of = np.zeros(len(masks), np.int64)
    for v in range(len(masks)):
        space_of[v] = (masks[v] >> _SPACE_SHIFT) & 1
    packed = np.zeros(128, np.uint64)  # see `_walk`
    for c in range(128):
        for bit in range(7):
            packed[c] += np.uint64((masks[class_of[c]] >> bit) & 1 or bit == _NON_ASCII_SHIFT) << np.uint64(8 * bit)
    j = 0
    for d in range(n):
        text = data[offsets[d] : offsets[d + 1]]
        row = out[:, d]
        class_counts[:] = 0
        if want_joined:
            joined_offsets[d] = j
        # want_cut as a constant, so that the loop without it compiles without its work
        if want_words:
            m = _walk(text, packed, class_of, space_of, class_counts, row, True, w_start, w_end)
        else:
            m = _walk(text, packed, class_of, space_of, class_counts, row, False, w_start, w_end)
        if want_joined:
            j = _join(text, w_start, w_end, m, joined, j)
        for v in range(len(masks)):
            if class_counts[v]:
                row[CHARS] += class_counts[v]
                for bit in range(7):
                    if (masks[v] >> bit) & 1:
                        row[bit] += class_counts[v]
        row[WORD_CHARS] = row[CHARS] - row[3]
        if not (want_words or want_lines):
            continue
        row[WORDS] = m
        if want_lines:
            ln, row[LINES] = _lines(text, l_start, l_end, l_key)
            row[NON_EMPTY_LINES] = ln
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
                v = ids[np.uint64(i)]  # unsigned: no check for a negative index
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
