"""Compiled loops of the filter rules (numba), imported only when a rule set is configured.

The rules' word split and line statistics are sequential by nature (a token starts where the
previous character says so); as numpy they cost a dozen full-length passes and temporaries per
character, as one compiled loop a few nanoseconds a character. numba compiles them once and
caches the machine code beside this file (`cache=True`), so a process pays only loading it.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from prep.text.filters import _ALPHA, _B, _CJK, _DIGIT, _PUNCT, _SPACE


@njit(cache=True, nogil=True)
def _is_infix_symbol(c: int) -> bool:  # "/:<>="
    return c == 0x2F or c == 0x3A or c == 0x3C or c == 0x3E or c == 0x3D


@njit(cache=True, nogil=True)
def _is_math(c: int) -> bool:  # "+-*^"
    return c == 0x2B or c == 0x2D or c == 0x2A or c == 0x5E


@njit(cache=True, nogil=True)
def tokens(cps, table, offsets):  # noqa: ANN001, ANN201 - numba arrays
    """spaCy-like tokens of the texts (see prep.text.filters' module doc) and CJK characters per text.

    `cps`: code points of all texts; `offsets`: char offsets of each text. Returns per token
    (characters, has a non-punctuation character, has a letter, text, 64-bit hash) and per text
    the CJK count. The hash is sum(c_i * B**i) + length (mod 2**64) over the token's characters.
    """
    n = len(offsets) - 1
    total = len(cps)
    cjk = np.zeros(n, np.int64)
    # the non-space characters, their class bits, text, and whether a word starts there
    c = np.empty(total, np.uint32)
    b = np.empty(total, np.uint8)
    doc = np.empty(total, np.int64)
    gap = np.empty(total, np.bool_)
    m = 0
    for d in range(n):
        was_space = True
        for i in range(offsets[d], offsets[d + 1]):
            bits = table[cps[i]]
            if bits & _CJK:
                cjk[d] += 1
            if bits & _SPACE:
                was_space = True
                continue
            c[m] = cps[i]
            b[m] = bits
            doc[m] = d
            gap[m] = was_space
            was_space = False
            m += 1
    affix = np.zeros(m, np.bool_)
    start = np.zeros(m + 1, np.bool_)
    w = 0
    while w < m:  # one word [w, e) at a time
        e = w + 1
        while e < m and not gap[e]:
            e += 1
        others = 0
        for i in range(w, e):
            if not b[i] & _PUNCT:
                others += 1
        before = 0
        for i in range(w, e):
            if b[i] & _PUNCT:
                after = others - before
                hyphen_in_word = c[i] == 0x2D and others > 0
                affix[i] = (before == 0 or after == 0) and not hyphen_in_word
            else:
                before += 1
        last, size = e - 1, e - w
        # abbreviations keep their final dot: "A.", "e.g.", "U.S."
        if size >= 2 and c[last] == 0x2E and b[last - 1] & _ALPHA and (size == 2 or (size >= 4 and c[last - 2] == 0x2E)):
            affix[last] = False
        start[w] = True
        for i in range(w + 1, e):
            ci, prev_b, prev_affix = c[i], b[i - 1], affix[i - 1]
            if affix[i]:
                is_run = (ci == 0x2E or ci == 0x2D) and c[i - 1] == ci and prev_affix  # "...", "--"
                if not is_run:
                    start[i] = True
                continue
            if prev_affix:
                start[i] = True
            alpha_after = i + 1 < e and b[i + 1] & _ALPHA
            alnum_before = prev_b & (_ALPHA | _DIGIT)
            infix = (
                ((ci == 0x2D or _is_infix_symbol(ci)) and alnum_before and alpha_after)
                or (ci == 0x2C and prev_b & _ALPHA and alpha_after)
                or (_is_math(ci) and prev_b & _DIGIT and i + 1 < e and b[i + 1] & _DIGIT)
            )
            if infix:
                start[i] = True
                start[i + 1] = True
            elif (ci == 0x27 or ci == 0x2019) and prev_b & _ALPHA and alpha_after:
                start[i] = True
        w = e
    count = 0
    for i in range(m):
        if start[i]:
            count += 1
    t_len = np.empty(count, np.int64)
    t_other = np.zeros(count, np.bool_)
    t_alpha = np.zeros(count, np.bool_)
    t_doc = np.empty(count, np.int64)
    t_hash = np.empty(count, np.uint64)
    k = -1
    h = np.uint64(0)
    power = np.uint64(1)
    for i in range(m + 1):
        if i == m or start[i]:
            if k >= 0:
                t_hash[k] = h + np.uint64(t_len[k])
            if i == m:
                break
            k += 1
            t_len[k] = 0
            t_doc[k] = doc[i]
            h = np.uint64(0)
            power = np.uint64(1)
        t_len[k] += 1
        if not b[i] & _PUNCT:
            t_other[k] = True
        if b[i] & _ALPHA:
            t_alpha[k] = True
        h += np.uint64(c[i]) * power
        power *= _B
    return t_len, t_other, t_alpha, t_doc, t_hash, cjk


@njit(cache=True, nogil=True)
def group_first(keys):  # noqa: ANN001, ANN201 - numba arrays
    """(group id of each uint64 key, its group's size, whether it is its group's first occurrence).

    Group ids are dense, in order of first occurrence. An open-addressing hash table: one pass,
    where sorting 64-bit keys with their positions took several.
    """
    m = len(keys)
    bits = 1
    while (1 << bits) < 2 * m:
        bits += 1
    mask = (1 << bits) - 1
    slot_key = np.empty(1 << bits, np.uint64)
    slot_group = np.full(1 << bits, -1, np.int64)
    group = np.empty(m, np.int64)
    first = np.zeros(m, np.bool_)
    sizes = np.zeros(m, np.int64)
    groups = 0
    for i in range(m):
        key = keys[i]
        slot = np.int64((key * _B) >> np.uint64(64 - bits))
        while slot_group[slot] >= 0 and slot_key[slot] != key:
            slot = (slot + 1) & mask
        if slot_group[slot] < 0:
            slot_key[slot] = key
            slot_group[slot] = groups
            first[i] = True
            groups += 1
        group[i] = slot_group[slot]
        sizes[group[i]] += 1
    count = np.empty(m, np.int64)
    for i in range(m):
        count[i] = sizes[group[i]]
    return group, count, first


@njit(cache=True, nogil=True)
def greedy_duplicates(rep, doc, cumulative, n, texts):  # noqa: ANN001, ANN201 - numba arrays
    """Characters of repeated n-grams per text as datatrove's find_all_duplicate counts them.

    `rep`: ascending first tokens of the n-grams seen before in their text, `doc`: their texts,
    `cumulative`: characters before each token. Scanning a text's words, an n-gram seen before
    counts and the scan jumps past it; else it moves on by one word.
    """
    out = np.zeros(texts)
    allowed = -1  # the first token the scan may count next
    current_doc = -1
    for k in range(len(rep)):
        at = rep[k]
        if doc[k] != current_doc:
            current_doc, allowed = doc[k], -1
        if at >= allowed:
            out[current_doc] += cumulative[at + n] - cumulative[at]
            allowed = at + n
    return out
