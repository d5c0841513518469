"""Compiled loops of the filter rules (numba), imported only when a rule set is configured.

The rules' word split and line statistics are sequential by nature (a token starts where the
previous character says so); as numpy they cost a dozen full-length passes and temporaries per
character, as one compiled loop a few nanoseconds a character. numba compiles them once and
caches the machine code beside this file (`cache=True`), so a process pays only loading it.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from prep.text._codes import ALPHA, CJK, DIGIT, GROUP_MIX, HASH_BASE, PUNCT, SPACE


@njit(cache=True, nogil=True)
def _is_infix_symbol(c: int) -> bool:  # "/:<>="
    return c == 0x2F or c == 0x3A or c == 0x3C or c == 0x3E or c == 0x3D


@njit(cache=True, nogil=True)
def _is_math(c: int) -> bool:  # "+-*^"
    return c == 0x2B or c == 0x2D or c == 0x2A or c == 0x5E


@njit(cache=True, nogil=True)
def char_counts(cps, table, offsets):  # noqa: ANN001, ANN201 - numba arrays
    """Per text: CJK characters, "#", ellipses ("..." as str.count counts it, and "\u2026"), "\n"."""
    n = len(offsets) - 1
    counts = np.zeros((n, 4), np.int64)
    for d in range(n):
        dots = 0
        for i in range(offsets[d], offsets[d + 1]):
            cp = cps[i]
            if table[cp] & CJK:
                counts[d, 0] += 1
            dots = dots + 1 if cp == 0x2E else 0
            if cp == 0x23:
                counts[d, 1] += 1
            elif dots == 3 or cp == 0x2026:
                counts[d, 2] += 1
                dots = 0
            elif cp == 0x0A:
                counts[d, 3] += 1
    return counts


@njit(cache=True, nogil=True)
def tokens(cps, table, offsets):  # noqa: ANN001, ANN201 - numba arrays
    """spaCy-like tokens of the texts (see prep.text.filters' module doc).

    `cps`: code points of all texts; `offsets`: char offsets of each text. Returns per token
    (characters, has a non-punctuation character, has a letter, text, 64-bit hash). The hash is
    sum(c_i * HASH_BASE**i) + length (mod 2**64) over the token's characters. One pass over the characters;
    a word (a run of non-whitespace) is cut into tokens while it is in the CPU's cache.
    """
    n = len(offsets) - 1
    cap = len(cps)
    t_len = np.empty(cap, np.int64)
    t_other = np.zeros(cap, np.bool_)
    t_alpha = np.zeros(cap, np.bool_)
    t_doc = np.empty(cap, np.int64)
    t_hash = np.empty(cap, np.uint64)
    affix = np.zeros(64, np.bool_)
    start = np.zeros(65, np.bool_)
    k = 0
    for d in range(n):
        i, end = offsets[d], offsets[d + 1]
        while i < end:
            if table[cps[i]] & SPACE:
                i += 1
                continue
            w = i  # a word: [w, e)
            others = 0
            alpha = alpha_before = False  # before: without the last character
            h, h_before, power = np.uint64(0), np.uint64(0), np.uint64(1)
            while i < end and not table[cps[i]] & SPACE:
                cp, bits = cps[i], table[cps[i]]
                if not bits & PUNCT:
                    others += 1
                alpha_before, h_before = alpha, h
                alpha |= (bits & ALPHA) != 0
                h += np.uint64(cp) * power
                power *= HASH_BASE
                i += 1
            e = i
            size = e - w
            if others == size:  # no punctuation, so nothing to cut: the word is one token
                t_len[k], t_other[k], t_alpha[k], t_doc[k], t_hash[k] = size, True, alpha, d, h + np.uint64(size)
                k += 1
                continue
            last = cps[e - 1]
            if (others == size - 1 and size >= 2 and table[last] & PUNCT and last != 0x2D
                    and not (size == 2 and last == 0x2E and table[cps[w]] & ALPHA)):
                # the commonest other case, "word," or "end.": one trailing punctuation character, cut off
                t_len[k], t_other[k], t_alpha[k], t_doc[k] = size - 1, True, alpha_before, d
                t_hash[k] = h_before + np.uint64(size - 1)
                t_len[k + 1], t_other[k + 1], t_alpha[k + 1], t_doc[k + 1] = 1, False, (table[last] & ALPHA) != 0, d
                t_hash[k + 1] = np.uint64(last) + np.uint64(1)
                k += 2
                continue
            if size > len(affix):
                affix = np.zeros(2 * size, np.bool_)
                start = np.zeros(2 * size + 1, np.bool_)
            # leading or trailing punctuation: tokens of their own; not a hyphen in a word
            before = 0
            for j in range(size):
                if table[cps[w + j]] & PUNCT:
                    hyphen_in_word = cps[w + j] == 0x2D and others > 0
                    affix[j] = (before == 0 or before == others) and not hyphen_in_word
                else:
                    affix[j] = False
                    before += 1
            # abbreviations keep their final dot: "A.", "e.g.", "U.S."
            last = size - 1
            if (size >= 2 and cps[w + last] == 0x2E and (table[cps[w + last - 1]] & ALPHA) != 0
                    and (size == 2 or (size >= 4 and cps[w + last - 2] == 0x2E))):
                affix[last] = False
            start[: size + 1] = False
            start[0] = True
            for j in range(1, size):
                ci, prev_b = cps[w + j], table[cps[w + j - 1]]
                if affix[j]:
                    if not ((ci == 0x2E or ci == 0x2D) and cps[w + j - 1] == ci and affix[j - 1]):  # "...", "--"
                        start[j] = True
                    continue
                if affix[j - 1]:
                    start[j] = True
                next_b = table[cps[w + j + 1]] if j + 1 < size else np.uint8(0)
                alpha_after = (next_b & ALPHA) != 0
                alnum_before = (prev_b & (ALPHA | DIGIT)) != 0
                infix = (
                    ((ci == 0x2D or _is_infix_symbol(ci)) and alnum_before and alpha_after)
                    or (ci == 0x2C and (prev_b & ALPHA) != 0 and alpha_after)
                    or (_is_math(ci) and (prev_b & DIGIT) != 0 and (next_b & DIGIT) != 0)
                )  # spaCy's infixes: a character between these splits the word in three
                if infix:
                    start[j] = True
                    start[j + 1] = True
                elif (ci == 0x27 or ci == 0x2019) and (prev_b & ALPHA) != 0 and alpha_after:
                    start[j] = True
            for j in range(size):
                cp, bits = cps[w + j], table[cps[w + j]]
                if start[j]:
                    if j:
                        t_hash[k] += np.uint64(t_len[k])
                        k += 1
                    t_len[k], t_doc[k], t_hash[k] = 0, d, np.uint64(0)
                    t_other[k] = t_alpha[k] = False
                    power = np.uint64(1)
                t_len[k] += 1
                t_other[k] |= (bits & PUNCT) == 0
                t_alpha[k] |= (bits & ALPHA) != 0
                t_hash[k] += np.uint64(cp) * power
                power *= HASH_BASE
            t_hash[k] += np.uint64(t_len[k])
            k += 1
    return t_len[:k], t_other[:k], t_alpha[:k], t_doc[:k], t_hash[:k]


@njit(cache=True, nogil=True)
def group_first(keys, doc):  # noqa: ANN001, ANN201 - numba arrays
    """(group id of each uint64 key, its group's size, whether it is its group's first occurrence).

    Keys of different texts never group together; `doc` (the text of each key) must be ascending.
    Group ids are dense, in order of first occurrence. An open-addressing hash table per text: one
    pass where sorting 64-bit keys with their positions took several, and a text's table is small
    enough to stay in the CPU's cache.
    """
    m = len(keys)
    slot_key = np.empty(16, np.uint64)
    slot_group = np.empty(16, np.int64)
    group = np.empty(m, np.int64)
    first = np.zeros(m, np.bool_)
    sizes = np.zeros(m, np.int64)
    groups = 0
    a = 0
    while a < m:
        e = a + 1
        while e < m and doc[e] == doc[a]:
            e += 1
        bits = 4
        while (1 << bits) < 2 * (e - a):
            bits += 1
        if (1 << bits) > len(slot_key):
            slot_key = np.empty(1 << bits, np.uint64)
            slot_group = np.empty(1 << bits, np.int64)
        mask = (1 << bits) - 1
        slot_group[: mask + 1] = -1
        for i in range(a, e):
            key = keys[i]
            slot = np.int64((key * HASH_BASE) >> np.uint64(64 - bits))
            while slot_group[slot] >= 0 and slot_key[slot] != key:
                slot = (slot + 1) & mask
            if slot_group[slot] < 0:
                slot_key[slot] = key
                slot_group[slot] = groups
                first[i] = True
                groups += 1
            group[i] = slot_group[slot]
            sizes[group[i]] += 1
        a = e
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


@njit(cache=True, nogil=True)
def _trim(cps, table, a: int, e: int) -> tuple[int, int]:  # noqa: ANN001 - numba arrays
    """[a, e) without the whitespace at its ends."""
    while a < e and table[cps[a]] & SPACE:
        a += 1
    while e > a and table[cps[e - 1]] & SPACE:
        e -= 1
    return a, e


@njit(cache=True, nogil=True)
def _ends_in_dots(cps, a: int, e: int) -> bool:  # noqa: ANN001 - numba array
    """Whether cps[a:e] ends in "..."."""
    return e - a >= 3 and cps[e - 1] == 0x2E and cps[e - 2] == 0x2E and cps[e - 3] == 0x2E


@njit(cache=True, nogil=True)
def newline_pieces(cps, table, offsets, min_run, trim):  # noqa: ANN001, ANN201 - numba arrays
    """The pieces of each text between its newline separators, as Arrow's split of the text gives them.

    Separators: every "\\n" (`min_run` 0), runs of "\\n" (1: regex "\\n+"), runs of two or more (2:
    "\\n{2,}"); with `trim` the text's leading and trailing whitespace is cut first. Every text has at
    least one piece (maybe empty). Returns per piece (text, first char, end char, 64-bit hash of its
    characters, whether it has a non-whitespace character).
    """
    n = len(offsets) - 1
    doc = np.empty(len(cps) + n, np.int64)
    start = np.empty(len(cps) + n, np.int64)
    end = np.empty(len(cps) + n, np.int64)
    k = 0
    for d in range(n):
        a, e = offsets[d], offsets[d + 1]
        if trim:
            a, e = _trim(cps, table, a, e)
        piece = a
        i = a
        while i < e:
            if cps[i] != 0x0A:
                i += 1
                continue
            j = i + 1
            if min_run > 0:
                while j < e and cps[j] == 0x0A:
                    j += 1
            if j - i >= max(min_run, 1):
                doc[k], start[k], end[k] = d, piece, i
                k += 1
                piece = j
            i = j
        doc[k], start[k], end[k] = d, piece, e
        k += 1
    doc, start, end = doc[:k], start[:k], end[:k]
    hashes = np.empty(k, np.uint64)
    content = np.zeros(k, np.bool_)
    for p in range(k):
        h = np.uint64(end[p] - start[p])
        for i in range(start[p], end[p]):
            h = h * HASH_BASE + np.uint64(cps[i])
            if not table[cps[i]] & SPACE:
                content[p] = True
        hashes[p] = h
    return doc, start, end, hashes, content


@njit(cache=True, nogil=True)
def _line_break(cp: int) -> bool:
    """Whether str.splitlines() breaks at this code point."""
    return (0x0A <= cp <= 0x0D) or (0x1C <= cp <= 0x1E) or cp == 0x85 or cp == 0x2028 or cp == 0x2029


@njit(cache=True, nogil=True)
def splitlines(cps, table, offsets):  # noqa: ANN001, ANN201 - numba arrays
    """The lines of each text as str.splitlines() gives them (no empty line after a final break, none in
    an empty text), per line (text, first char, end char, first non-space char is "•" or "-", the line
    ends in "..." or "\\u2026" before trailing whitespace)."""
    n = len(offsets) - 1
    cap = len(cps) + n
    doc = np.empty(cap, np.int64)
    start = np.empty(cap, np.int64)
    end = np.empty(cap, np.int64)
    k = 0
    for d in range(n):
        a, e = offsets[d], offsets[d + 1]
        i = a
        while i < e:
            if _line_break(cps[i]):
                doc[k], start[k], end[k] = d, a, i
                k += 1
                i += 2 if cps[i] == 0x0D and i + 1 < e and cps[i + 1] == 0x0A else 1
                a = i
            else:
                i += 1
        if a < e:
            doc[k], start[k], end[k] = d, a, e
            k += 1
    doc, start, end = doc[:k], start[:k], end[:k]
    bullet = np.zeros(k, np.bool_)
    ellipsis = np.zeros(k, np.bool_)
    for p in range(k):
        a, e = _trim(cps, table, start[p], end[p])
        if a < e:
            bullet[p] = cps[a] == 0x2022 or cps[a] == 0x2D
            ellipsis[p] = cps[e - 1] == 0x2026 or _ends_in_dots(cps, a, e)
    return doc, start, end, bullet, ellipsis


@njit(cache=True, nogil=True)
def _citation(cps, a: int, e: int) -> bool:  # noqa: ANN001 - numba array
    """Whether cps[a:e] is "[digits]", "[edit]" or "[citation needed]" (C4's citation marks)."""
    if e - a < 2 or cps[a] != 0x5B or cps[e - 1] != 0x5D:
        return False
    digits = True
    for i in range(a + 1, e - 1):
        if not 0x30 <= cps[i] <= 0x39:
            digits = False
    return digits or _spells(cps, a + 1, e - 1, _EDIT) or _spells(cps, a + 1, e - 1, _CITATION_NEEDED)


_EDIT = np.array([ord(ch) for ch in "edit"], np.uint32)
_CITATION_NEEDED = np.array([ord(ch) for ch in "citation needed"], np.uint32)


@njit(cache=True, nogil=True)
def _spells(cps, a: int, e: int, word) -> bool:  # noqa: ANN001 - numba arrays
    """Whether cps[a:e] is `word`."""
    if e - a != len(word):
        return False
    for j in range(len(word)):  # noqa: SIM110 - numba compiles no generator expressions
        if cps[a + j] != word[j]:
            return False
    return True


@njit(cache=True, nogil=True)
def c4_lines(cps, table, start, end, remove_citations):  # noqa: ANN001, ANN201 - numba arrays
    """Per line: (first and end char once whitespace is trimmed, words between whitespace, characters of
    the longest word, whether the line ends in terminal punctuation (.?!"') but not "...", once the
    citation marks are removed if asked)."""
    k = len(start)
    t_start = np.empty(k, np.int64)
    t_end = np.empty(k, np.int64)
    words = np.zeros(k, np.int64)
    longest = np.zeros(k, np.int64)
    terminal = np.zeros(k, np.bool_)
    for p in range(k):
        a, e = _trim(cps, table, start[p], end[p])
        t_start[p], t_end[p] = a, e
        run = 0
        for i in range(a, e + 1):
            if i < e and not table[cps[i]] & SPACE:
                run += 1
                continue
            if run:
                words[p] += 1
                longest[p] = max(longest[p], run)
            run = 0
        # citation marks hold no brackets inside, so those at the end are the last ones the regex removes
        while remove_citations and e > a and cps[e - 1] == 0x5D:
            j = e - 2
            while j >= a and cps[j] != 0x5B and cps[j] != 0x5D:
                j -= 1
            if j < a or not _citation(cps, j, e):
                break
            e = j
        if e > a:
            last = cps[e - 1]
            terminal[p] = ((last == 0x2E or last == 0x3F or last == 0x21 or last == 0x22 or last == 0x27)
                           and not _ends_in_dots(cps, a, e))
    return t_start, t_end, words, longest, terminal


@njit(cache=True, nogil=True)
def gather(cps, start, end):  # noqa: ANN001, ANN201 - numba arrays
    """The code points of the spans [start, end), one after the other, each followed by "\\n"."""
    out = np.empty(np.sum(end - start) + len(start), np.uint32)
    k = 0
    for p in range(len(start)):
        for i in range(start[p], end[p]):
            out[k] = cps[i]
            k += 1
        out[k] = 0x0A
        k += 1
    return out


@njit(cache=True, nogil=True)
def ngram_levels(hashes, doc, top):  # noqa: ANN001, ANN201 - numba arrays
    """Word n-grams that may repeat, n = 2..top, grouped; see `Texts.ngrams` for what and why.

    Returns, concatenated over the levels, (first token of each n-gram, its group's size, whether it
    is its group's first occurrence), and where each level starts in them.
    """
    m = len(hashes)
    at = np.empty(max(m - 1, 0), np.int64)
    keys = np.empty(max(m - 1, 0), np.uint64)
    k = 0
    for i in range(m - 1):
        if doc[i] == doc[i + 1]:
            at[k] = i
            keys[k] = (hashes[i] * HASH_BASE) ^ hashes[i + 1]
            k += 1
    at, keys = at[:k], keys[:k]
    group, count, first = group_first(keys, doc[at])
    all_at, all_count, all_first = [at], [count], [first]
    for n in range(3, top + 1):
        # an n-gram may repeat where the (n-1)-grams at its first and second token both repeat
        k = 0
        below = at  # the previous level's, kept in all_at
        at = np.empty(len(below), np.int64)
        for j in range(len(below) - 1):
            i = below[j]
            if (count[j] >= 2 and below[j + 1] == i + 1 and count[j + 1] >= 2 and i + n - 1 < m
                    and doc[i] == doc[i + n - 1]):
                at[k] = i
                keys[k] = (np.uint64(group[j] + 1) * GROUP_MIX) ^ hashes[i + n - 1]
                k += 1
        at = at[:k]
        group, count, first = group_first(keys[:k], doc[at])
        all_at.append(at)
        all_count.append(count)
        all_first.append(first)
    bounds = np.zeros(len(all_at) + 1, np.int64)
    for level in range(len(all_at)):
        bounds[level + 1] = bounds[level] + len(all_at[level])
    out_at = np.empty(bounds[-1], np.int64)
    out_count = np.empty(bounds[-1], np.int64)
    out_first = np.empty(bounds[-1], np.bool_)
    for level in range(len(all_at)):
        out_at[bounds[level] : bounds[level + 1]] = all_at[level]
        out_count[bounds[level] : bounds[level + 1]] = all_count[level]
        out_first[bounds[level] : bounds[level + 1]] = all_first[level]
    return out_at, out_count, out_first, bounds
