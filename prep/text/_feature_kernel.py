"""The features' compiled pass (numba): every text-derived feature of a batch in one walk over its UTF-8 bytes.

Why compiled: the features need the character classes, the words, the lines and the repeats of
words, lines and word n-grams of each text. As numpy these are a dozen full-length passes with
temporaries and sorts of the whole batch (~40 ms per MiB); as one loop per text, whose words and
lines are grouped while they are still in the CPU's cache, a few. Equality is exact: words and
lines are grouped by a 64-bit hash and then compared byte for byte, n-grams by exact integer
keys of the word ids. numba caches the machine code beside this file (`cache=True`), so a
process pays only loading it.

Scratch arrays are sized for the longest text of the batch with `np.empty`, whose pages the
kernel touches only as far as a text needs them.
"""

from __future__ import annotations

import numpy as np
from numba import njit

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


@njit(cache=True, nogil=True)
def _table_bits(m: int) -> int:
    """log2 of a hash table's size for m keys: at most three quarters full."""
    bits = 4
    while (1 << bits) * 3 < 4 * m:
        bits += 1
    return bits


@njit(cache=True, nogil=True)
def _fresh_table(m, marks):  # noqa: ANN001, ANN201 - numba arrays
    """Size a table for m keys and mark its slots empty (-1 in `marks`): (slot mask, shift for `_slot`)."""
    bits = _table_bits(m)
    mask = (1 << bits) - 1
    marks[: mask + 1] = -1
    return mask, np.uint64(64 - bits)


@njit(cache=True, nogil=True)
def _slot(h, shift):  # noqa: ANN001, ANN201
    return np.int64((np.uint64(h) * _MIX) >> shift)


@njit(cache=True, nogil=True)
def _byte_hash(data, start, length):  # noqa: ANN001, ANN201 - numba arrays
    h = _FNV_SEED
    for i in range(start, start + length):
        h = (h ^ np.uint64(data[i])) * _FNV_PRIME
    return h


@njit(cache=True, nogil=True)
def _exact_ids(data, starts, lengths, m, slot_keys, slot_ids, first, ids, hash_mask=_ALL_BITS):  # noqa: ANN001, ANN201
    """Dense ids, in order of first occurrence, of the byte strings data[starts[i]:starts[i]+lengths[i]], i < m:
    equal strings get equal ids. Returns how many are distinct. A slot of the table holds a hash of the bytes and
    an id; equal hashes are compared byte for byte (tests make every hash collide with `hash_mask` 0)."""
    mask, shift = _fresh_table(m, slot_ids)
    distinct = 0
    for i in range(m):
        h = _byte_hash(data, starts[i], lengths[i]) & hash_mask
        s = _slot(h, shift)
        while True:
            g = slot_ids[s]
            if g < 0:
                slot_keys[s] = np.int64(h)
                slot_ids[s] = distinct
                first[distinct] = i
                g = distinct
                distinct += 1
                break
            f = first[g]
            if slot_keys[s] == np.int64(h) and lengths[f] == lengths[i]:
                a, b = starts[f], starts[i]
                k = 0
                while k < lengths[i] and data[a + k] == data[b + k]:
                    k += 1
                if k == lengths[i]:
                    break
            s = (s + 1) & mask
        ids[i] = g
    return distinct


@njit(cache=True, nogil=True)
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


@njit(cache=True, nogil=True)
def _top(ids, counts, at, p, w_chars, n):  # noqa: ANN001, ANN201
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
    for j in range(n):
        chars += w_chars[where + j]
    return best * chars


@njit(cache=True, nogil=True)
def _top_ngrams(w_id, m, distinct_words, w_chars, out_row, scratch):  # noqa: ANN001
    """The covered characters of the top 2-, 3- and 4-gram of one text's m words (ids w_id).

    An n-gram can repeat only where the (n-1)-grams at its first and second word both repeat, so a
    level keys only those positions, by (id of the (n-1)-gram there, last word): exact integer keys.
    A level's positions `at` ascend, so the (n-1)-gram at the next word is the next entry, if any.
    """
    keys, ids, counts, at, slot_keys, slot_ids = scratch
    width = np.int64(distinct_words)
    p = m - 1
    for i in range(p):
        keys[i] = w_id[i] * width + w_id[i + 1]
        at[i] = i
    _group(keys, p, slot_keys, slot_ids, ids, counts)
    out_row[TOP2] = _top(ids, counts, at, p, w_chars, 2)
    for n in (3, 4):
        q_new = 0
        for q in range(p - 1):
            i = at[q]
            if at[q + 1] == i + 1 and counts[ids[q]] >= 2 and counts[ids[q + 1]] >= 2:
                keys[q_new] = ids[q] * width + w_id[i + n - 1]
                at[q_new] = i
                q_new += 1
        p = q_new
        _group(keys, p, slot_keys, slot_ids, ids, counts)
        out_row[TOP2 + n - 2] = _top(ids, counts, at, p, w_chars, n)


@njit(cache=True, nogil=True)
def text_stats(data, offsets, bits, flags, joined, joined_offsets):  # noqa: ANN001, ANN201 - numba arrays
    """Per text: characters having each class bit (`bits`: the class bits of every code point), and the
    columns named above that `flags` asks for. With WANT_JOINED, each text's words joined by one space
    (`" ".join(text.split())`) go into `joined`, text i at joined[joined_offsets[i]:joined_offsets[i + 1]].

    Characters are counted at their first byte; a stray continuation byte is part of a word but no character.
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
    cap_w = longest // 2 + 2 if want_ngrams else 1  # a text of L bytes has at most L // 2 + 1 words
    cap_l = longest + 2 if want_lines else 1
    cap = max(cap_w, cap_l)
    # Per word 32 bytes, per line 12, the table 12 a slot: index-sized values are int32 (texts < 2 GiB), and the
    # n-gram levels reuse the word arrays that the word ids no longer need.
    w_start = np.empty(cap_w, np.int64)
    w_len = np.empty(cap_w, np.int32)
    w_chars = np.empty(cap_w, np.int32)
    w_id = np.empty(cap_w, np.int32)
    l_start = np.empty(cap_l, np.int64)
    l_len = np.empty(cap_l, np.int32)
    slots = 1 << _table_bits(cap)
    slot_keys = np.empty(slots, np.int64)
    slot_ids = np.empty(slots, np.int32)
    first = np.empty(cap, np.int32)
    group_ids = np.empty(cap_l, np.int32)
    scratch = (w_start, w_len, np.empty(cap_w, np.int32), np.empty(cap_w, np.int32), slot_keys, slot_ids)
    ascii_counts = np.zeros(128, np.int64)
    class_counts = np.zeros(256, np.int64)
    is_space = np.zeros(128, np.bool_)
    for c in range(128):
        is_space[c] = (bits[c] & _SPACE_BIT) != 0
    j = 0
    for d in range(n):
        a, b = offsets[d], offsets[d + 1]
        ascii_counts[:] = 0
        class_counts[:] = 0
        m = 0  # words
        in_word = False
        word_start = 0
        word_chars = 0
        newlines = 0
        line_start = a
        ln = 0  # non-empty lines
        if want_joined:
            joined_offsets[d] = j
        i = a
        while i <= b:
            if i < b:
                c = data[i]
                size = 1
                counted = True
                if c < 0x80:
                    ascii_counts[c] += 1
                    space = is_space[c]
                    if c == 0x0A and want_lines:
                        e = i
                        while e > line_start and data[e - 1] == 0x0D:
                            e -= 1
                        if e > line_start:
                            l_start[ln], l_len[ln] = line_start, e - line_start
                            ln += 1
                        newlines += 1
                        line_start = i + 1
                elif c >= 0xC0:
                    size = 2 + (c >= 0xE0) + (c >= 0xF0)
                    if i + size > b:  # truncated: the bytes left, as a character of no class
                        size = b - i
                        cp = 0
                    elif size == 2:
                        cp = ((c & 0x1F) << 6) | (data[i + 1] & 0x3F)
                    elif size == 3:
                        cp = ((c & 0x0F) << 12) | ((data[i + 1] & 0x3F) << 6) | (data[i + 2] & 0x3F)
                    else:
                        cp = (((c & 0x07) << 18) | ((data[i + 1] & 0x3F) << 12) | ((data[i + 2] & 0x3F) << 6)
                              | (data[i + 3] & 0x3F))
                    cls = bits[min(cp, 0x10FFFF)]
                    class_counts[cls] += 1
                    space = (cls & _SPACE_BIT) != 0
                else:  # a stray continuation byte
                    space = False
                    counted = False
            else:
                space = True  # the end of the text ends its last word
                size = 1
                counted = False
            if want_words:
                if space:
                    if in_word:
                        if want_ngrams:
                            w_start[m], w_len[m], w_chars[m] = word_start, i - word_start, word_chars
                        if want_joined:
                            if m:
                                joined[j] = 0x20
                                j += 1
                            for k in range(word_start, i):
                                joined[j] = data[k]
                                j += 1
                        m += 1
                        in_word = False
                else:
                    if not in_word:
                        in_word = True
                        word_start = i
                        word_chars = 0
                    if counted:
                        word_chars += 1
            i += size
        row = out[d]
        for c in range(128):
            class_counts[bits[c]] += ascii_counts[c]
        for v in range(256):
            if class_counts[v]:
                row[CHARS] += class_counts[v]
                for bit in range(7):
                    if (v >> bit) & 1:
                        row[bit] += class_counts[v]
        row[WORDS] = m
        row[WORD_CHARS] = row[CHARS] - row[3]
        if want_lines:
            if b > line_start:  # the piece after the last newline
                e = b
                while e > line_start and data[e - 1] == 0x0D:
                    e -= 1
                if e > line_start:
                    l_start[ln], l_len[ln] = line_start, e - line_start
                    ln += 1
                row[LINES] = newlines + 1
            else:
                row[LINES] = newlines
            row[NON_EMPTY_LINES] = ln
            if ln:
                row[DUP_LINES] = ln - _exact_ids(data, l_start, l_len, ln, slot_keys, slot_ids, first, group_ids)
        if want_ngrams and m >= 2:
            distinct = _exact_ids(data, w_start, w_len, m, slot_keys, slot_ids, first, w_id)
            _top_ngrams(w_id, m, distinct, w_chars, row, scratch)
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
            for i in range(offsets[d], offsets[d + 1]):
                v = ids[i]
                if seen[v] != d + 1:
                    seen[v] = d + 1
                    count += 1
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
