"""Compiled loop of the filter rules (numba), imported only when a rule set is configured.

`measure` judges a batch of texts by the rules in one call over the UTF-8 bytes of the batch. For each
text it decodes the bytes into a scratch buffer the size of the longest text, classifying each code point
through the lookup table and counting characters as it goes; the words, lines, paragraphs and n-grams the
configured rule sets need are then cut from that buffer while it is still in the CPU's cache, a rule set at
a time in the order they are judged, and each check is judged as soon as its numbers are counted: a text
that fails one is measured no further (only the first rule it fails is counted, with its value). Nothing
per word or per line leaves the loop, and no array the size of the batch is built; a rule set that skips a
text (by its share of CJK characters) costs nothing past decoding it. Repeats are found in one
open-addressing hash table that every text reuses: a slot holds the generation (the number of the
current use) that filled it, so a text neither allocates nor clears a table. A lookup branches only where
another key holds the slot, not on whether the key was found (as unpredictable as the text), and the loops
over n-grams count with arithmetic, not branches, likewise; hashes of characters are sums of products with
constant powers, not a chain from character to character. Where it measured faster (decoding), arrays are
indexed with unsigned integers: numba checks a signed index for a negative value, and wraps it. The scratch (an arena
laid out by `layout`) is the caller's, kept from batch to batch.

numba compiles once and caches the machine code beside this file (`cache=True`), so a process pays
only loading it.
"""

from __future__ import annotations

import numpy as np

from prep.text._codes import ALPHA, CJK, COUNTED, DIGIT, GROUP_MIX, HASH_BASE, PUNCT, SPACE, TERMINAL, UNICODE_PUNCT
from prep.text._numba import njit

# The rule sets, as bits (`measure`'s `order` lists them in the order they are judged).
GOPHER_QUALITY, GOPHER_REPETITION, C4, FINEWEB = 1, 2, 4, 8

# `measure`'s columns, per text (see the rule sets in prep.text.filters for their use). gopher_repetition's
# columns lie in the order it computes them: a check is judged as soon as the columns before its own are; the
# words come last, as they are cut only for the first check that needs them.
COLUMNS = (
    "chars", "cjk", "hashes", "ellipses", "newlines", "empty",
    "content_words", "content_chars", "alpha_words", "stop_words", "lines", "bullet_lines", "ellipsis_lines",
    "paragraphs", "dup_paragraphs", "dup_paragraph_chars", "line_runs", "dup_line_runs", "dup_line_run_chars",
    "top_2gram", "top_3gram", "top_4gram",
    "dup_5gram", "dup_6gram", "dup_7gram", "dup_8gram", "dup_9gram", "dup_10gram",
    "lorem", "curly", "sentences",
    "content_lines", "no_content_lines", "punct_lines", "short_lines", "dup_content_line_chars",
    "chars_but_newlines", "words",
)
(CHARS, CJK_CHARS, HASHES, ELLIPSES, NEWLINES, EMPTY,
 CONTENT_WORDS, CONTENT_CHARS, ALPHA_WORDS, STOP_WORDS, LINES, BULLET_LINES, ELLIPSIS_LINES,
 PARAGRAPHS, DUP_PARAGRAPHS, DUP_PARAGRAPH_CHARS, LINE_RUNS, DUP_LINE_RUNS, DUP_LINE_RUN_CHARS,
 TOP_2GRAM, _, _, DUP_5GRAM, _, _, _, _, _,
 LOREM, CURLY, SENTENCES,
 CONTENT_LINES, NO_CONTENT_LINES, PUNCT_LINES, SHORT_LINES, DUP_CONTENT_LINE_CHARS,
 CHARS_BUT_NEWLINES, WORDS) = range(len(COLUMNS))

# A check, a row of `measure`'s `checks`: the value is column NUM, divided by column DEN if DEN >= 0 (IF_NONE
# where that is 0); a value of 0 counts as none if ZERO_IS_NONE; it fails when below (BELOW) or above the
# THRESHOLD. No value (NaN) never fails.
NUM, DEN, IF_NONE, ZERO_IS_NONE, BELOW, THRESHOLD = range(6)

# C4's switches, `measure`'s `c4_flags` in this order
C4_FLAGS = ("remove_citations", "terminal_punct", "lorem_ipsum", "javascript", "curly_bracket", "policy")

# The helpers of `measure` allocate nothing, so they are compiled without numba's reference counts: a call
# would otherwise count each array argument in and out atomically, which costs more than most calls' work.
_helper = njit(cache=True, nogil=True, _nrt=False)


@njit(cache=True, nogil=True)
def layout(size: int) -> np.ndarray:
    """Where `measure`'s scratch arrays lie in its arena, for texts of fewer than `size` characters: their
    byte offsets, 8-aligned, then the arena's length. The hash table comes first: an arena starts zeroed
    (generation 0), so a generation is never stale while the arena lives."""
    capacity = 16
    while capacity < 2 * size:
        capacity *= 2
    widths = np.array([
        8, 16 * capacity,  # last generation; hash table slots: (key, generation << 32 | value)
        4 * size, size, 4 * size, 8 * size,  # code points, classes, line breaks, one C4 line and its stops
        4 * size, 8 * size, size,  # tokens: lengths, hashes, flags
        8 * size, 8 * size, 8 * size, size,  # lines between newlines: first and end char, hash, B**length, content
        16 * size, 16 * size, 4 * size, 8 * (size + 1),  # n-grams: levels, keys, sizes, chars
    ])
    offsets = np.zeros(len(widths) + 1, np.int64)
    for k in range(len(widths)):
        offsets[k + 1] = offsets[k] + (widths[k] + 7) // 8 * 8
    return offsets


@njit(cache=True, nogil=True)
def measure(data, starts, ends, table, order, skip_cjk, checks, check_ends, stops, c4_limits, c4_flags, needles,  # noqa: ANN001, ANN201, PLR0913 - numba arrays
            needle_ends, shift, short_line, arena, size):
    """Judge each text (`data[starts[d]:ends[d]]`, UTF-8) by the rule sets of `order` (bits, in the order they
    are judged), but for those that skip it: whose `skip_cjk` (one per bit) its fraction of CJK characters
    exceeds. Return, per text, the numbers of `COLUMNS` (those it was judged by; the others stay 0), the first
    check it fails (an index into `checks`; -1 if none) and that check's value.

    `checks`: rows of NUM, DEN, ... (see there), those of the k-th rule set of `order` ending at
    `check_ends[k]`, in the order they are judged. A text is measured for a rule set only while it has failed
    none of the checks before: what no check will read is not computed.

    `stops`: token hashes of gopher_quality's stop words, no two equal; `c4_limits`: (longest word, fewest
    words) of a line C4 keeps, `c4_flags`: C4's switches (`C4_FLAGS`), `needles`: code points of "lorem
    ipsum", "javascript", then the policy substrings, each ending at its `needle_ends`, and their
    `_shift_table` (made once per rule settings, by the caller); `short_line`:
    fineweb's short line length. `arena`: bytes laid out by `layout(size)`, `size` more than any text's
    characters (its bytes will do); kept from call to call, so that no call allocates or clears scratch.
    """
    n = len(starts)
    out = np.zeros((n, len(COLUMNS)))
    rule = np.full(n, -1, np.int64)
    value = np.full(n, np.nan)
    o = layout(size)
    last_gen = arena[o[0] : o[1]].view(np.int64)
    hash_table = arena[o[1] : o[2]].view(np.uint64)
    cps = arena[o[2] : o[3]].view(np.int32)
    cls = arena[o[3] : o[4]]
    breaks = arena[o[4] : o[5]].view(np.int32)
    line = arena[o[5] : o[6]].view(np.int32).reshape(2, (o[6] - o[5]) // 8)
    t_len = arena[o[6] : o[7]].view(np.int32)
    t_hash = arena[o[7] : o[8]].view(np.uint64)
    t_flags = arena[o[8] : o[9]]
    pieces = arena[o[9] : o[10]].view(np.int32).reshape(2, (o[10] - o[9]) // 8)
    p_hash = arena[o[10] : o[11]].view(np.uint64)
    p_power = arena[o[11] : o[12]].view(np.uint64)
    p_content = arena[o[12] : o[13]].view(np.bool_)
    levels = arena[o[13] : o[14]].view(np.int32).reshape(2, 2, (o[14] - o[13]) // 16)
    keys = arena[o[14] : o[15]].view(np.uint64).reshape(2, (o[15] - o[14]) // 16)
    sizes = arena[o[15] : o[16]].view(np.int32)
    cumulative = arena[o[16] : o[17]].view(np.int64)
    gen = last_gen[0]
    search = (needles, needle_ends, shift)  # C4's substrings
    seen = np.zeros(len(stops), np.bool_)  # which stop words a text has
    stop_table = _stop_table(stops)
    every = len(COLUMNS)
    for d in range(n):
        row = out[d]
        chars, lines = _decode(data, starts[d], ends[d], table, cps, cls, breaks, row)
        row[EMPTY] = chars == 0
        frac_cjk = row[CJK_CHARS] / chars if chars else 0.0
        m = k = -1  # tokens, pieces: not cut yet
        lined = 0  # lines: 1 counted for gopher_quality, 2 and checked for C4
        failed = False
        v = np.nan
        j = 0
        for s in range(len(order)):
            bit, end = order[s], check_ends[s]
            skip = False
            for b in range(len(skip_cjk)):
                skip |= bit == 1 << b and frac_cjk > skip_cjk[b]
            if skip:
                j = end
                continue
            if bit & (GOPHER_REPETITION | FINEWEB) and k < 0:
                k = _pieces(cps, cls, chars, breaks, lines, pieces, p_hash, p_power, p_content)
            if bit == GOPHER_QUALITY:
                m = _words(cps, cls, chars, t_len, t_hash, t_flags, m, row)
                _word_counts(t_len, t_hash, t_flags, m, stops, stop_table, seen, row)
                if not lined:
                    _lines(cps, cls, chars, breaks, lines, table, False, c4_limits, c4_flags, search, line, row)
                    lined = 1
            elif bit == C4:
                _lines(cps, cls, chars, breaks, lines, table, True, c4_limits, c4_flags, search, line, row)
                lined = 2
            elif bit == GOPHER_REPETITION:
                gen = _next_gen(hash_table, gen)
                row[PARAGRAPHS : PARAGRAPHS + 3] = _paragraphs(cps, cls, chars, pieces, p_hash, p_power, hash_table,
                                                               gen)
                gen = _next_gen(hash_table, gen)
                row[LINE_RUNS : LINE_RUNS + 3] = _repeats(pieces, p_hash, p_content, k, RUNS, hash_table, gen)
                j, failed, v = _judge(row, checks, j, end, TOP_2GRAM)
                if not failed:
                    m = _words(cps, cls, chars, t_len, t_hash, t_flags, m, row)
                    gen, j, failed, v = _ngrams(t_len, t_hash, m, levels, keys, sizes, cumulative, hash_table, gen,
                                                row, checks, j, end)
            else:
                gen = _next_gen(hash_table, gen)
                counts = _repeats(pieces, p_hash, p_content, k, CONTENT, hash_table, gen)
                row[CONTENT_LINES], row[DUP_CONTENT_LINE_CHARS] = counts[0], counts[2]
                row[NO_CONTENT_LINES], row[CHARS_BUT_NEWLINES] = counts[0] == 0, chars - row[NEWLINES]
                for p in range(k):
                    a, e = pieces[0, p], pieces[1, p]
                    if p_content[p]:
                        if cls[e - 1] & TERMINAL:
                            row[PUNCT_LINES] += 1
                        if e - a <= short_line:
                            row[SHORT_LINES] += 1
                j, failed, v = _judge(row, checks, j, end, WORDS)
                if not failed:
                    m = _words(cps, cls, chars, t_len, t_hash, t_flags, m, row)
            if not failed:
                j, failed, v = _judge(row, checks, j, end, every)
            if failed:
                rule[d], value[d] = j, v
                break
    last_gen[0] = gen
    return out, rule, value


@_helper
def _judge(row, checks, j: int, end: int, ready: int) -> tuple[int, bool, float]:  # noqa: ANN001 - numba arrays
    """Judge `row` by checks[j:end] in order, while their columns are before `ready`: return the next check
    (the one failed if any), whether it failed, and its value."""
    while j < end:
        num, den = np.int64(checks[j, NUM]), np.int64(checks[j, DEN])
        if num >= ready or den >= ready:
            return j, False, np.nan
        v = row[num]
        if den >= 0:
            v = v / row[den] if row[den] > 0 else checks[j, IF_NONE]
        if checks[j, ZERO_IS_NONE] and v == 0:
            v = np.nan
        if v < checks[j, THRESHOLD] if checks[j, BELOW] else v > checks[j, THRESHOLD]:
            return j, True, v
        j += 1
    return j, False, np.nan


@_helper
def _decode(data, a, e, table, cps, cls, breaks, row):  # noqa: ANN001, ANN201 - numba arrays
    """Decode data[a:e] into `cps` with each code point's class in `cls`, count CJK characters, "#",
    ellipses ("..." as str.count counts it, and "\u2026") and "\\n"; return the number of code points and
    of line breaks (what str.splitlines() breaks at), whose positions go to `breaks`. CJK characters are
    counted without a branch (they mix with others unpredictably in some texts); only COUNTED ones branch."""
    size = lines = 0
    dots = cjk = hashes = ellipses = newlines = 0
    last_dot = -2
    i = a
    while i < e:
        cp = np.int32(data[np.uint64(i)])
        if cp < 0x80:
            i += 1
        elif cp < 0xE0:
            cp = ((cp & 0x1F) << 6) | _tail(data, i + 1)
            i += 2
        elif cp < 0xF0:
            cp = ((cp & 0x0F) << 12) | (_tail(data, i + 1) << 6) | _tail(data, i + 2)
            i += 3
        else:
            cp = (((cp & 0x07) << 18) | (_tail(data, i + 1) << 12)
                  | (_tail(data, i + 2) << 6) | _tail(data, i + 3))
            i += 4
        bits = table[np.uint64(cp)]
        cps[np.uint64(size)] = cp
        cls[np.uint64(size)] = bits
        cjk += (bits & CJK) != 0  # no branch: CJK and other characters mix unpredictably in some texts
        if bits & COUNTED:
            if cp == 0x2E:
                dots = dots + 1 if last_dot == size - 1 else 1
                last_dot = size
                if dots == 3:
                    ellipses += 1
                    dots = 0
            elif cp == 0x23:
                hashes += 1
            elif cp == 0x2026:
                ellipses += 1
            else:  # a line break
                newlines += cp == 0x0A
                breaks[lines] = size
                lines += 1
        size += 1
    row[CHARS], row[CJK_CHARS], row[HASHES], row[ELLIPSES], row[NEWLINES] = size, cjk, hashes, ellipses, newlines
    return size, lines


@_helper
def _tail(data, i: int) -> np.int32:  # noqa: ANN001 - numba array
    """The bits of the continuation byte data[i] (indexed unsigned: no check for a negative index)."""
    return np.int32(data[np.uint64(i)]) & 0x3F


@_helper
def _words(cps, cls, size, t_len, t_hash, t_flags, m, row):  # noqa: ANN001, ANN201, PLR0913 - numba arrays
    """The text's tokens (`_tokens`) unless cut already (`m` >= 0): their number."""
    if m < 0:
        m = _tokens(cps, cls, size, t_len, t_hash, t_flags)
        row[WORDS] = m
    return m


@_helper
def _is_infix_symbol(c: int) -> bool:  # "/:<>="
    return c == 0x2F or c == 0x3A or c == 0x3C or c == 0x3E or c == 0x3D


@_helper
def _is_math(c: int) -> bool:  # "+-*^"
    return c == 0x2B or c == 0x2D or c == 0x2A or c == 0x5E


@_helper
def _tokens(cps, cls, size, t_len, t_hash, t_flags):  # noqa: ANN001, ANN201 - numba arrays
    """spaCy-like tokens of cps[:size] (see prep.text.filters' module doc); return their number.

    Per token: characters, 64-bit hash (sum(c_i * HASH_BASE**i) + length, mod 2**64), and flags (bit 0:
    has a non-punctuation character, bit 1: has a letter). A word (a run of non-whitespace) is hashed up to
    its first punctuation character; a word with one, last ("word," or "end."), is cut there, one with more
    is cut by `_cut_word`.
    """
    k = 0
    i = 0
    while i < size:
        if cls[i] & SPACE:
            i += 1
            continue
        w = i  # a word: [w, e)
        alpha = False
        h, power = np.uint64(0), np.uint64(1)
        while i < size and not cls[i] & (SPACE | PUNCT):
            alpha |= (cls[i] & ALPHA) != 0
            h += np.uint64(cps[i]) * power
            power *= HASH_BASE
            i += 1
        if i == size or cls[i] & SPACE:  # no punctuation, so nothing to cut: the word is one token
            t_len[k], t_hash[k], t_flags[k] = i - w, h + np.uint64(i - w), 1 | (2 if alpha else 0)
            k += 1
            continue
        last = cps[i]
        if ((i + 1 == size or cls[i + 1] & SPACE) and i > w and last != 0x2D
                and not (i - w == 1 and last == 0x2E and cls[w] & ALPHA)):
            # the commonest other case: one punctuation character, the last, cut off
            t_len[k], t_hash[k], t_flags[k] = i - w, h + np.uint64(i - w), 1 | (2 if alpha else 0)
            t_len[k + 1], t_hash[k + 1] = 1, np.uint64(last) + np.uint64(1)
            t_flags[k + 1] = 2 if cls[i] & ALPHA else 0
            k += 2
            i += 1
            continue
        others = i - w
        while i < size and not cls[i] & SPACE:
            others += not cls[i] & PUNCT
            i += 1
        k = _cut_word(cps, cls, w, i, others, t_len, t_hash, t_flags, k)
    return k


@_helper
def _cut_word(cps, cls, w, e, others, t_len, t_hash, t_flags, k):  # noqa: ANN001, ANN201, PLR0913 - numba arrays
    """Cut the word cps[w:e] (with punctuation, `others` characters that are not) into tokens from the k-th
    on, in one pass; return the next token's index."""
    size = e - w
    # abbreviations keep their final dot: "A.", "e.g.", "U.S."
    abbreviation = (size >= 2 and cps[e - 1] == 0x2E and (cls[e - 2] & ALPHA) != 0
                    and (size == 2 or (size >= 4 and cps[e - 3] == 0x2E)))
    before = 0  # characters that are not punctuation before this one
    affix_before = infix_before = False
    length, h, flags, power = 0, np.uint64(0), 0, np.uint64(1)  # of the token being read
    for j in range(size):
        cp, bits = cps[w + j], cls[w + j]
        if not bits & PUNCT:  # most characters: never an affix, an infix or an apostrophe, all punctuation
            start = j == 0 or affix_before or infix_before
            affix = infix = False
            before += 1
        else:
            # leading or trailing punctuation: tokens of their own; not a hyphen in a word
            affix = ((before == 0 or before == others) and not (cp == 0x2D and others > 0)
                     and not (j == size - 1 and abbreviation))
            if j == 0:
                start = True
                infix = False
            elif affix:  # a run of "." or "-" is one token
                start = infix_before or not ((cp == 0x2E or cp == 0x2D) and cps[w + j - 1] == cp and affix_before)
                infix = False
            else:
                prev_b = cls[w + j - 1]
                next_b = cls[w + j + 1] if j + 1 < size else np.uint8(0)
                alpha_after = (next_b & ALPHA) != 0
                infix = (
                    ((cp == 0x2D or _is_infix_symbol(cp)) and (prev_b & (ALPHA | DIGIT)) != 0 and alpha_after)
                    or (cp == 0x2C and (prev_b & ALPHA) != 0 and alpha_after)
                    or (_is_math(cp) and (prev_b & DIGIT) != 0 and (next_b & DIGIT) != 0)
                )  # spaCy's infixes: a character between these splits the word in three
                apostrophe = (cp == 0x27 or cp == 0x2019) and (prev_b & ALPHA) != 0 and alpha_after
                start = infix_before or affix_before or infix or apostrophe
        affix_before, infix_before = affix, infix
        if start:
            if j:
                t_len[k], t_hash[k], t_flags[k] = length, h + np.uint64(length), flags
                k += 1
            length, h, flags, power = 0, np.uint64(0), 0, np.uint64(1)
        length += 1
        flags |= ((bits & PUNCT) == 0) | (((bits & ALPHA) != 0) << 1)
        h += np.uint64(cp) * power
        power *= HASH_BASE
    t_len[k], t_hash[k], t_flags[k] = length, h + np.uint64(length), flags
    return k + 1


@njit(cache=True, nogil=True)
def _stop_table(stops):  # noqa: ANN001, ANN201 - numba array
    """A hash table of the stop words' hashes (`stops`, no two equal) for `_word_counts`: rows key, index in
    `stops`, crowded (another stop word whose slot this is lies further on); slots at most a quarter full. An
    empty slot holds the first stop word, whose own slot is not empty: no word that goes there equals it."""
    bits = _table_bits(2 * len(stops))
    mask = (1 << bits) - 1
    table = np.zeros((3, 1 << bits), np.uint64)
    used = np.zeros(1 << bits, np.bool_)
    for s in range(len(stops)):
        slot = _slot(stops[s], bits)
        while used[slot]:
            table[2, _slot(stops[s], bits)] = 1
            slot = (slot + 1) & mask
        table[0, slot], table[1, slot], used[slot] = stops[s], s, True
    for slot in range(1 << bits):
        if not used[slot] and len(stops):
            table[0, slot], table[1, slot] = stops[0], 0
    return table


@_helper
def _word_counts(t_len, t_hash, t_flags, m, stops, stop_table, seen, row):  # noqa: ANN001, ANN201, PLR0913 - numba arrays
    """gopher_quality's word counts: words with a non-punctuation character and their characters, words with
    a letter, distinct stop words (by hash, looked up in `_stop_table` without a branch but where crowded)."""
    content = chars = alpha = 0
    for k in range(m):  # no branch on a word's flags (mispredicted in code and mixed text): a vector loop
        flags = np.int64(t_flags[k])
        content += flags & 1
        chars += t_len[k] * (flags & 1)
        alpha += flags >> 1
    seen[:] = False
    bits = _table_bits(2 * len(stops))
    for k in range(m * (len(stops) > 0)):
        slot = _slot(t_hash[k], bits)
        if stop_table[2, slot]:
            for s in range(len(stops)):
                seen[s] |= t_hash[k] == stops[s]
        else:
            seen[stop_table[1, slot]] |= t_hash[k] == stop_table[0, slot]
    row[CONTENT_WORDS], row[CONTENT_CHARS], row[ALPHA_WORDS], row[STOP_WORDS] = content, chars, alpha, np.sum(seen)


@_helper
def _slot(key, bits):  # noqa: ANN001, ANN201 - numba scalars
    return np.int64((key * HASH_BASE) >> np.uint64(64 - bits))


@_helper
def _table_bits(items: int) -> int:
    """log2 of a table size for `items` keys (at most half full)."""
    bits = 4
    while (1 << bits) < 2 * items:
        bits += 1
    return bits


@_helper
def _group_of(key, bits, hash_table, gen, new):  # noqa: ANN001, ANN201 - numba arrays
    """The value stored for `key` in generation `gen` of the hash table's first 2**bits slots, else `new`, now
    stored. A slot is two words, (key, generation << 32 | value): a probe reads one cache line. Whether the key
    was there is not branched on (it is as unpredictable as whether a text repeats itself): the slot is written
    either way."""
    one = np.uint64(1)
    mask = np.uint64((1 << bits) - 1)
    slot = np.uint64(_slot(key, bits))  # unsigned indices: no tests for negative ones
    now = np.uint64(gen)
    while _taken(hash_table, slot + slot, key, now):
        slot = (slot + one) & mask
    held = hash_table[slot + slot + one]
    value = np.int64(held & np.uint64(0xFFFFFFFF)) if held >> np.uint64(32) == now else new
    hash_table[slot + slot], hash_table[slot + slot + one] = key, (now << np.uint64(32)) | np.uint64(value)
    return value


@_helper
def _taken(hash_table, at: np.uint64, key: np.uint64, now: np.uint64) -> bool:  # noqa: ANN001 - numba array
    """Whether the slot at word `at` holds another key than `key` in generation `now`, tested without a branch:
    the compiler would branch twice for `held == now and other != key`, on a hit or a new key."""
    stale = (hash_table[at + np.uint64(1)] >> np.uint64(32)) ^ now  # 0 in generation `now`, else below 2**32
    other = hash_table[at] ^ key  # 0 for `key`
    return ((stale - np.uint64(1)) >> np.uint64(32)) & ((other | (other >> np.uint64(32))) & np.uint64(0xFFFFFFFF)) != 0


@_helper
def _next_gen(hash_table, gen: int) -> int:  # noqa: ANN001 - numba array
    """The hash table's next generation: all its slots empty again (cleared once every 2**31 uses)."""
    if gen + 1 < 1 << 31:
        return gen + 1
    hash_table[:] = 0
    return 1


@_helper
def _ngrams(t_len, t_hash, m, levels, keys, sizes, cumulative, hash_table, gen, row, checks, j, end):  # noqa: ANN001, ANN201, PLR0913 - numba arrays
    """gopher_repetition's n-gram numbers of one text's m tokens, n = 2..10, each level judged by checks[j:end]
    (`_judge`) as soon as it is counted, up to the first failed; return the hash table's last generation and
    what `_judge` returned last.

    2-grams are grouped by a 64-bit key of (token, next token). An n-gram can repeat only where the
    (n-1)-grams at its first and second token repeat, so a level only groups those positions, by a key of
    (group of the (n-1)-gram, last token); an n-gram at no such position occurs once.
    top_n: characters of the commonest n-gram times its count (the first to occur of the commonest; with no
    repeat, the first n-gram once, as datatrove's Counter.most_common(1)); dup_n: characters of repeated
    n-grams as datatrove's find_all_duplicate counts them (scanning the words, an n-gram seen before counts
    and the scan jumps past it).
    The loops over a level branch only where the outcome is predictable (a new commonest group): whether a
    position repeats, is counted or goes to the next level is arithmetic, as it flips from one to the next.
    """
    cumulative[0] = 0  # characters before each token
    for i in range(m):
        cumulative[i + 1] = cumulative[i] + t_len[i]
    cur = 0
    count = max(m - 1, 0)
    at, key_of = levels[cur, 0], keys[cur]
    for i in range(count):
        at[i] = i
        key_of[i] = (t_hash[i] * HASH_BASE) ^ t_hash[i + 1]
    for n in range(2, 11):
        at, group, key_of = levels[cur, 0], levels[cur, 1], keys[cur]
        gen = _next_gen(hash_table, gen)
        bits = _table_bits(count)
        for x in range(count):  # a group is named by its first n-gram: no probe waits for the one before
            g = _group_of(key_of[x], bits, hash_table, gen, x)
            group[x] = g
            sizes[x] = 0
            sizes[np.uint64(g)] += 1  # unsigned indices: no tests for negative ones
        # one pass for this level's numbers and the next level: where the n-grams at i and i + 1 both repeat
        at[count], group[count] = -1, 0  # past the last position: not next to it
        top = cumulative[n] + n - 1 if m >= n else 0  # with no repeat, the first n-gram once
        best = 1
        allowed = -1  # the first token the scan of find_all_duplicate may count next
        total = 0
        nxt = 1 - cur
        next_at, next_key = levels[nxt, 0], keys[nxt]
        k = np.uint64(0)
        size = sizes[np.uint64(group[0])]
        span = np.uint64(n)
        for x in range(count):
            i = at[x]
            g = group[x]
            a = np.uint64(i)
            if n <= 4:
                if size > best:
                    best = size
                    top = best * (cumulative[a + span] - cumulative[a] + n - 1)
            else:
                counted = (g != x) & (i >= allowed)
                total += (cumulative[a + span] - cumulative[a]) * counted
                allowed = i + n if counted else allowed
            after = sizes[np.uint64(group[x + 1])]
            next_at[k] = i
            next_key[k] = (np.uint64(g + 1) * GROUP_MIX) ^ t_hash[a + span]  # t_hash[m] (scratch) at the last
            k += np.uint64((size >= 2) & (after >= 2) & (at[x + 1] == i + 1))
            size = after
        row[TOP_2GRAM + n - 2] = top if n <= 4 else total  # the dup_n columns follow the top_n ones
        j, failed, v = _judge(row, checks, j, end, TOP_2GRAM + n - 1)
        if failed:
            return gen, j, failed, v
        cur, count = nxt, np.int64(k)
    return gen, j, False, np.nan


# which pieces `_repeats` counts
RUNS, CONTENT = 0, 1


@_helper
def _pieces(cps, cls, size, breaks, lines, pieces, p_hash, p_power, p_content):  # noqa: ANN001, ANN201, PLR0913 - numba arrays
    """The pieces of cps[:size] between its "\\n" (among the `lines` `breaks`), as Arrow's split of the text
    gives them; return their number (at least one, maybe empty). Per piece: first and end char (`pieces`),
    64-bit hash of its characters c_1..c_L (L * B**L + sum(c_i * B**(L - i)), B = HASH_BASE), B**L, whether
    it has a non-whitespace character."""
    k = 0
    piece = 0
    for q in range(lines + 1):
        i = breaks[q] if q < lines else size
        if i < size and cps[i] != 0x0A:
            continue
        pieces[0, k], pieces[1, k] = piece, i
        h, power = _horner(cps, piece, i, np.uint64(0))
        q = piece
        while q < i and cls[q] & SPACE:
            q += 1
        p_hash[k], p_power[k], p_content[k] = np.uint64(i - piece) * power + h, power, q < i
        k += 1
        piece = i + 1
    return k


@_helper
def _piece_body(cps, pieces, p_hash, p_power, p: int, a: int, e: int) -> tuple[np.uint64, np.uint64]:  # noqa: ANN001, PLR0913 - numba arrays
    """(sum(cps[i] * B**(e - 1 - i), a <= i < e), B**(e - a)), B = HASH_BASE, for cps[a:e] within the p-th piece:
    from the piece's hash where that is the whole piece, else from the characters."""
    if a == pieces[0, p] and e == pieces[1, p]:
        return p_hash[p] - np.uint64(e - a) * p_power[p], p_power[p]
    return _horner(cps, a, e, np.uint64(0))


# `_horner`'s steps: a block of _BLOCK characters, weighted B**(_BLOCK - 1 - t) for the t-th, and B**_BLOCK;
# then steps of up to _STEP, B**r and per row r the weights of r characters, B**(r - 1 - t), 0 past the r-th
_BLOCK, _STEP = 64, 8
_BLOCK_WEIGHTS = np.array([int(HASH_BASE) ** (_BLOCK - 1 - t) % (1 << 64) for t in range(_BLOCK)], np.uint64)
_BLOCK_POWER = np.uint64(int(HASH_BASE) ** _BLOCK % (1 << 64))
_POWERS = np.array([int(HASH_BASE) ** r % (1 << 64) for r in range(_STEP + 1)], np.uint64)
_WEIGHTS = np.array([[int(_POWERS[r - 1 - t]) if t < r else 0 for t in range(_STEP)] for r in range(_STEP + 1)],
                    np.uint64)


@_helper
def _horner(cps, a: int, e: int, h: np.uint64) -> tuple[np.uint64, np.uint64]:  # noqa: ANN001 - numba array
    """(h * B**(e - a) + sum(cps[i] * B**(e - 1 - i), a <= i < e), B**(e - a)), B = HASH_BASE, mod 2**64, as
    sums of products with constant powers of B, not a chain of multiplications from character to character: a
    block of `_BLOCK` characters is one dot product (vectorized), the rest steps of `_STEP` whose last has
    zero weights past the end (no loop but this one ends on the length). Indices are unsigned: no tests for
    negative ones."""
    power = np.uint64(1)
    while e - a >= _BLOCK:
        at = np.uint64(a)
        part = np.uint64(0)
        for t in range(_BLOCK):
            part += np.uint64(cps[at + np.uint64(t)]) * _BLOCK_WEIGHTS[np.uint64(t)]
        h = h * _BLOCK_POWER + part
        power *= _BLOCK_POWER
        a += _BLOCK
    while a < e:
        r = np.uint64(min(e - a, _STEP))
        at = np.uint64(a)
        part = np.uint64(0)
        if a + _STEP <= len(cps):
            for t in range(_STEP):
                part += np.uint64(cps[at + np.uint64(t)]) * _WEIGHTS[r, np.uint64(t)]
        else:  # none read past the array
            for t in range(r):
                part += np.uint64(cps[at + np.uint64(t)]) * _WEIGHTS[r, np.uint64(t)]
        h = h * _POWERS[r] + part
        power *= _POWERS[r]
        a += _STEP
    return h, power


@_helper
def _paragraphs(cps, cls, size, pieces, p_hash, p_power, hash_table, gen):  # noqa: ANN001, ANN201, PLR0913 - numba arrays
    """(paragraphs, repeated ones, their characters) as datatrove's find_duplicates counts the pieces of the
    stripped text between runs of two or more "\\n" (regex "\\n{2,}").

    A paragraph is a run of `_pieces`'s pieces without an empty one (an empty piece is a "\\n\\n"), so its hash
    is composed from its pieces' hashes, not its characters; only of the first and last piece, which the
    stripping may cut, are the characters hashed again (`_piece_body`).
    """
    a, e = _trim(cls, 0, size)
    if a == e:
        return 1, 0, 0  # one empty paragraph
    first = 0
    while pieces[1, first] <= a:  # the piece of the first non-space character (a "\\n" is a space)
        first += 1
    last = first
    while pieces[1, last] < e:
        last += 1
    bits = _table_bits(last - first + 1)
    count = dup = chars = 0
    g = first
    while g <= last:
        end = g
        while end < last and pieces[1, end + 1] > pieces[0, end + 1]:
            end += 1
        start_char = a if g == first else pieces[0, g]
        end_char = e if end == last else pieces[1, end]
        h, power = _piece_body(cps, pieces, p_hash, p_power, g, start_char, end_char if end == g else pieces[1, g])
        for t in range(g + 1, end + 1):
            body, part = _piece_body(cps, pieces, p_hash, p_power, t, pieces[0, t],
                                     end_char if t == end else pieces[1, t])
            h = (h * HASH_BASE + np.uint64(0x0A)) * part + body
            power *= HASH_BASE * part
        h += np.uint64(end_char - start_char) * power
        count += 1
        if _group_of(h, bits, hash_table, gen, count) != count:
            dup += 1
            chars += end_char - start_char
        g = end + 1
        while g <= last and pieces[1, g] == pieces[0, g]:
            g += 1
    return count, dup, chars


@_helper
def _repeats(pieces, p_hash, p_content, k, which, hash_table, gen):  # noqa: ANN001, ANN201 - numba arrays
    """(pieces, repeated pieces, characters of the repeated ones) among the first k pieces, as datatrove's
    find_duplicates: a piece repeats when an equal one (by hash) came earlier. `which`: the pieces of a split
    at RUNS of "\\n" (the non-empty ones, and the first and last even when empty), or the pieces with CONTENT
    (a non-whitespace character)."""
    bits = _table_bits(k)
    count = dup = chars = 0
    for p in range(k):
        if which == RUNS and pieces[1, p] == pieces[0, p] and 0 < p < k - 1:
            continue
        if which == CONTENT and not p_content[p]:
            continue
        count += 1
        if _group_of(p_hash[p], bits, hash_table, gen, p) != p:
            dup += 1
            chars += pieces[1, p] - pieces[0, p]
    return count, dup, chars


@_helper
def _trim(cls, a: int, e: int) -> tuple[int, int]:  # noqa: ANN001 - numba array
    """[a, e) without the whitespace at its ends."""
    while a < e and cls[a] & SPACE:
        a += 1
    while e > a and cls[e - 1] & SPACE:
        e -= 1
    return a, e


@_helper
def _ends_in_dots(cps, a: int, e: int) -> bool:  # noqa: ANN001 - numba array
    """Whether cps[a:e] ends in "..."."""
    return e - a >= 3 and cps[e - 1] == 0x2E and cps[e - 2] == 0x2E and cps[e - 3] == 0x2E


@_helper
def _lines(cps, cls, size, breaks, lines, table, c4, c4_limits, c4_flags, search, line, row):  # noqa: ANN001, ANN201, PLR0913 - numba arrays
    """The lines of cps[:size] as str.splitlines() gives them (no empty line after a final break, none in an
    empty text), cut at its `lines` `breaks`: gopher_quality's counts of lines, of lines whose first
    non-space character is "•" or "-", and of lines that end in "..." or "\u2026" before trailing whitespace;
    with `c4`, C4's line checks, up to the first line with "lorem ipsum" or "{" (which C4 drops the text for:
    the counts are then partial)."""
    a = p = 0
    sentences = bullets = ellipses = 0
    for q in range(lines + 1):
        i = breaks[q] if q < lines else size
        if i < a or (q == lines and a == size):  # the "\n" of a "\r\n"; or no line after a final break
            continue
        s, e = _trim(cls, a, i)
        if s < e:
            if cps[s] == 0x2022 or cps[s] == 0x2D:
                bullets += 1
            if cps[e - 1] == 0x2026 or _ends_in_dots(cps, s, e):
                ellipses += 1
        if c4:
            verdict = _c4_line(cps, cls, s, e, table, c4_limits, c4_flags, search, line)
            if verdict & 6:
                row[LOREM], row[CURLY] = (verdict & 2) != 0, (verdict & 4) != 0
                break
            sentences += verdict >> 3
        p += 1
        a = i + (2 if i + 1 < size and cps[i] == 0x0D and cps[i + 1] == 0x0A else 1)
    row[LINES], row[BULLET_LINES], row[ELLIPSIS_LINES], row[SENTENCES] = p, bullets, ellipses, sentences


@_helper
def _citation_at(cps, j: int, e: int) -> int:  # noqa: ANN001 - numba array
    """The end of the citation mark ("[digits]", "[edit]", "[citation needed]", C4's) at cps[j], else -1."""
    if cps[j] != 0x5B:
        return -1
    k = j + 1
    while k < e and 0x30 <= cps[k] <= 0x39:
        k += 1
    if k < e and cps[k] == 0x5D:
        return k + 1
    for word in (_EDIT, _CITATION_NEEDED):
        if _spells(cps, j, e, word):
            return j + len(word)
    return -1


_EDIT = np.array([ord(ch) for ch in "[edit]"], np.int32)
_CITATION_NEEDED = np.array([ord(ch) for ch in "[citation needed]"], np.int32)


@_helper
def _spells(cps, a: int, e: int, word) -> bool:  # noqa: ANN001 - numba arrays
    """Whether cps[a:e] starts with `word`."""
    if e - a < len(word):
        return False
    for j in range(len(word)):  # noqa: SIM110 - numba compiles no generator expressions
        if cps[a + j] != word[j]:
            return False
    return True


@_helper
def _lower(cp: int) -> int:
    """Arrow's utf8_lower of a code point, where the result is ASCII (all that C4's substrings can match)."""
    if cp == 0x130:  # "İ"
        return 0x69
    if cp == 0x212A:  # Kelvin sign
        return 0x6B
    return cp + 0x20 * (np.uint32(cp - 0x41) < 26)  # no branch on the case of a letter


@_helper
def _c4_line(cps, cls, a, e, table, c4_limits, c4_flags, search, line):  # noqa: ANN001, ANN201, PLR0913 - numba arrays
    """C4's checks of the trimmed line cps[a:e], as bits: 1 kept, 2 "lorem ipsum", 4 "{" (once
    "javascript" lines are out); the line's sentences above them (bits 3 on). `search`: the substrings
    (`_find`); `line`: scratch for the line's copy (row 0) and where its ".", "!" and "?" are (row 1)."""
    remove_citations, terminal_punct, lorem_ipsum, javascript, curly_bracket, policy = c4_flags
    if terminal_punct:  # first: the cheapest check, and the one most lines that go fail
        # citation marks hold no brackets inside, so those at the end are the last ones the regex removes
        end = e
        while remove_citations and end > a and cps[end - 1] == 0x5D:
            j = end - 2
            while j >= a and cps[j] != 0x5B and cps[j] != 0x5D:
                j -= 1
            if j < a or _citation_at(cps, j, end) != end:
                break
            end = j
        if end == a:
            return 0
        last = cps[end - 1]
        if not ((last == 0x2E or last == 0x3F or last == 0x21 or last == 0x22 or last == 0x27)
                and not _ends_in_dots(cps, a, end)):
            return 0
    # words between whitespace, and the copy the other checks see: the line without its citation marks (regex,
    # leftmost, not overlapping), lower-cased (the substrings are lower-case ASCII, and lowering moves no
    # character in or out of the sentence regex's classes)
    words = longest = run = size = stops = 0
    curly = False
    copy_from = a
    copy, stop_at = line[0], line[1]
    for j in range(a, e):
        c = cps[j]
        in_word = np.int64((cls[j] & SPACE) == 0)  # no branch on it: words are short, it would be mispredicted
        words += in_word & (run == 0)
        run = (run + 1) * in_word
        longest = max(longest, run)
        if j < copy_from:
            continue
        if c == 0x5B and remove_citations:
            copy_from = _citation_at(cps, j, e)
            if copy_from > j:
                continue
        curly |= c == 0x7B
        copy[size] = _lower(c)
        stop_at[stops] = size  # kept when it is a stop: listed without a branch
        stops += _stop(c)
        size += 1
    if longest > c4_limits[0] or words < c4_limits[1]:
        return 0
    found = _find(copy, size, *search)
    verdict = 1
    if lorem_ipsum and found & 1:
        verdict |= 2
    if javascript and found & 2:
        return verdict & 2
    if curly_bracket and curly:
        verdict |= 4
    if policy and found >> 2:
        return verdict & 6
    return verdict | ((_sentence_breaks(copy, size, table, stop_at, stops) + 1) << 3)


@_helper
def _in_set(c, lo, hi):  # noqa: ANN001, ANN201 - numba scalars
    """1 if the character c is in the set of ASCII characters whose bits are `lo` (below 0x40) and `hi` (from
    0x40 to 0x7F), else 0 (and for any c from 0x80 on): no branch."""
    return ((hi if c >= 0x40 else lo) >> np.uint64(c & 63)) & np.uint64(c < 0x80)


@njit(cache=True, nogil=True)
def _shift_table(needles, needle_ends):  # noqa: ANN001, ANN201 - numba arrays
    """`_find`'s shifts (Wu and Manber's, with blocks of two characters): for each pair of characters (`_block`),
    how far a window as long as the shortest needle may move on when the pair ends it, so that no needle's start
    is passed by: the least distance from the pair to the end of that many first characters of a needle, or all
    but one of them when no needle has the pair there."""
    shortest = np.min(np.diff(np.concatenate((np.zeros(1, np.int64), needle_ends.astype(np.int64)))))
    shift = np.full(_BLOCKS, shortest - 1, np.int64)
    for w in range(len(needle_ends)):
        a = needle_ends[w - 1] if w else 0
        for j in range(shortest - 1):
            block = _block(needles[a + j], needles[a + j + 1])
            shift[block] = min(shift[block], shortest - 2 - j)
    return shift


_BLOCKS = 128 * 128  # pairs of ASCII characters; any other character counts as 0x7F, which no needle has


@_helper
def _block(c, d) -> int:  # noqa: ANN001 - numba scalars
    return (min(c, 0x7F) << 7) | min(d, 0x7F)


@_helper
def _find(line, size: int, needles, needle_ends, shift) -> int:  # noqa: ANN001 - numba arrays
    """Which needles (lower-case ASCII, two characters or more, as bits) line[:size] contains. A window as long as
    the shortest needle moves along the line by the `_shift_table` of the two characters that end it: ~1/7 of
    the positions are looked at, and only where those two characters end some needle's first ones (rare) are the
    needles compared from the window's start."""
    shortest = shift[_BLOCKS - 1] + 1  # 0x7F 0x7F ends no needle's start
    found = 0
    end = shortest - 1  # the window's last character
    while end < size:
        step = shift[_block(line[end - 1], line[end])]
        if step:
            end += step
            continue
        start = end - shortest + 1
        for w in range(len(needle_ends)):
            a = needle_ends[w - 1] if w else 0
            length = needle_ends[w] - a
            if found & (1 << w) or start + length > size:
                continue
            j = 0
            while j < length and line[start + j] == needles[a + j]:
                j += 1
            if j == length:
                found |= 1 << w
        end += 1
    return found


@_helper
def _sentence_breaks(line, size, table, stop_at, stops) -> int:  # noqa: ANN001 - numba arrays
    """Matches of the regex (?:^|[^.!?])[.!?][\\pP]*\\s+\\pP*[^\\s\\pP] in line[:size] as Arrow's
    count_substring_regex counts them (RE2, leftmost, not overlapping, each search starting where the last
    match ended, which is a new "^"; \\s is ASCII whitespace): a lone . ! or ? ending a sentence before a word.

    The quantified classes are disjoint, so a match from a given start is unique: each run is taken whole.
    A failed start inside the first run of punctuation fails the same way, so the search skips past it.
    The stops are looked up in their list (`stop_at[:stops]`, in order), not searched for character by character.
    """
    count = 0
    s = begin = 0
    k = 0  # the first listed stop not before s
    while s < size:
        while k < stops and stop_at[k] < s:
            k += 1
        if k == stops:
            break
        p = stop_at[k]  # the next stop: a match can start only at it (at the text's start) or just before it
        if p > s:
            s, t = p - 1, p + 1
        elif s == begin:
            t = s + 1
        else:
            s += 1
            continue
        while t < size and table[line[t]] & UNICODE_PUNCT:
            t += 1
        run_end = spaces = t
        while t < size and _ascii_space(line[t]):
            t += 1
        if t > spaces:
            while t < size and table[line[t]] & UNICODE_PUNCT:
                t += 1
            if t < size and not _ascii_space(line[t]):
                count += 1
                s = begin = t + 1
                continue
        s = max(s + 1, run_end - 1)
    return count


_STOPS = np.uint64(1 << 0x21 | 1 << 0x2E | 1 << 0x3F)


@_helper
def _stop(cp: int) -> bool:  # ".!?", without a branch
    return ((_STOPS >> np.uint64(cp & 63)) & np.uint64(cp < 64)) != 0


@_helper
def _ascii_space(cp: int) -> bool:  # RE2's \s: "\t\n\f\r "
    return cp == 0x20 or cp == 0x09 or cp == 0x0A or cp == 0x0C or cp == 0x0D
