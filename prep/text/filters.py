"""Quality filter rules: the Gopher, C4 and FineWeb heuristics, and simple bounds on any feature.

The rule sets and their defaults are those of datatrove (`GopherQualityFilter`,
`GopherRepetitionFilter`, `C4QualityFilter`, `FineWebQualityFilter`, datatrove 0.10). What they compare
with their thresholds is measured for a whole batch by one compiled call (`prep.text._kernels`, numba,
loaded only when a rule set is configured) over the texts' UTF-8 bytes, read in place: it decodes and
classifies each text's code points through a lookup table, then cuts words the way spaCy's blank English
tokenizer (datatrove's word splitter for English) cuts them, approximately: a whitespace-separated word
loses its leading and trailing punctuation as tokens of their own (a run of dots is one token), a hyphen
between letters splits a word in three and an apostrophe between letters in two. Lines, paragraphs and
word n-grams are compared by 64-bit hashes in a hash table that every text reuses. C4's substring checks
and its sentence count (a regex) are compiled too, to the same answers as Arrow's kernels.

Each document is judged by the rules in order (rule sets in the order of the pipeline file, the
checks of a set in datatrove's order) and counted under the first rule it fails. A rule set
written for English is skipped for documents whose `frac_cjk` exceeds its `skip_frac_cjk`;
those documents are counted as skipped, not dropped.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from prep.errors import UserError
from prep.text._codes import (
    ALPHA,
    CJK,
    COUNTED,
    DIGIT,
    HASH_BASE,
    PUNCT,
    SPACE,
    SPACE_LEADS,
    TERMINAL,
    UNICODE_PUNCT,
)
from prep.text.arrow import arrow_of, binary_array, numpy_of, utf8_of
from prep.text.cache import cached_table

# datatrove.utils.text.TERMINAL_PUNCTUATION (Unicode's Terminal_Punctuation characters), FineWeb's stop_chars
TERMINAL_PUNCTUATION = (
    "!.?\u0589\u061d\u061e\u061f\u06d4\u0700\u0701\u0702\u07f9\u0837\u0839\u083d\u083e\u0964\u0965\u104a\u104b"
    "\u1362\u1367\u1368\u166e\u1735\u1736\u17d4\u17d5\u17d6\u17d9\u17da\u1803\u1809\u1944\u1945\u1aa8\u1aa9"
    "\u1aaa\u1aab\u1b5a\u1b5b\u1b5e\u1b5f\u1b7d\u1b7e\u1c3b\u1c3c\u1c7e\u1c7f\u203c\u203d\u2047\u2048\u2049"
    "\u2e2e\u2e3c\u2e53\u2e54\u3002\ua4ff\ua60e\ua60f\ua6f3\ua6f7\ua876\ua877\ua8ce\ua8cf\ua92f\ua9c8\ua9c9"
    "\uaa5d\uaa5e\uaa5f\uaaf0\uaaf1\uabeb\ufe52\ufe56\ufe57\uff01\uff0e\uff1f\uff61\U00010a56\U00010a57"
    "\U00010f55\U00010f56\U00010f57\U00010f58\U00010f59\U00010f86\U00010f87\U00010f88\U00010f89\U00011047"
    "\U00011048\U000110be\U000110bf\U000110c0\U000110c1\U00011141\U00011142\U00011143\U000111c5\U000111c6"
    "\U000111cd\U000111de\U000111df\U00011238\U00011239\U0001123b\U0001123c\U000112a9\U0001144b\U0001144c"
    "\U000115c2\U000115c3\U000115c9\U000115ca\U000115cb\U000115cc\U000115cd\U000115ce\U000115cf\U000115d0"
    "\U000115d1\U000115d2\U000115d3\U000115d4\U000115d5\U000115d6\U000115d7\U00011641\U00011642\U0001173c"
    "\U0001173d\U0001173e\U00011944\U00011946\U00011a42\U00011a43\U00011a9b\U00011a9c\U00011c41\U00011c42"
    "\U00011ef7\U00011ef8\U00011f43\U00011f44\U00016a6e\U00016a6f\U00016af5\U00016b37\U00016b38\U00016b44"
    "\U00016e98\U0001bc9f\U0001da88"
)
STOP_WORDS = ["the", "be", "to", "of", "and", "that", "have", "with"]
POLICY_SUBSTRINGS = ["terms of use", "privacy policy", "cookie policy", "uses cookies", "use of cookies", "use cookies"]

# Rule set -> threshold -> default. `skip_frac_cjk`: documents with more CJK than this skip the set.
RULE_SETS: dict[str, dict[str, Any]] = {
    "gopher_quality": {
        "min_words": 50, "max_words": 100_000, "min_mean_word_length": 3, "max_mean_word_length": 10,
        "max_hash_ratio": 0.1, "max_ellipsis_ratio": 0.1, "max_bullet_lines": 0.9, "max_ellipsis_lines": 0.3,
        "min_alpha_words": 0.8, "min_stop_words": 2, "stop_words": STOP_WORDS, "skip_frac_cjk": 0.3,
    },
    "gopher_repetition": {
        "max_dup_para_frac": 0.3, "max_dup_para_char_frac": 0.2, "max_dup_line_frac": 0.3,
        "max_dup_line_char_frac": 0.2, "max_top_2gram": 0.20, "max_top_3gram": 0.18, "max_top_4gram": 0.16,
        "max_dup_5gram": 0.15, "max_dup_6gram": 0.14, "max_dup_7gram": 0.13, "max_dup_8gram": 0.12,
        "max_dup_9gram": 0.11, "max_dup_10gram": 0.10, "skip_frac_cjk": 0.3,
    },
    "c4": {
        "max_word_length": 1000, "min_words_per_line": 3, "min_sentences": 5, "remove_citations": True,
        "terminal_punct": True, "lorem_ipsum": True, "javascript": True, "curly_bracket": True, "policy": True,
        "skip_frac_cjk": 0.3,
    },
    "fineweb": {
        "min_line_punct": 0.12, "line_punct_exclude_zero": False, "max_short_lines": 0.67,
        "short_line_length": 30, "max_dup_line_chars": 0.01, "max_newline_words": 0.3, "skip_frac_cjk": 0.3,
    },
}
_FLAGS = {"remove_citations", "terminal_punct", "lorem_ipsum", "javascript", "curly_bracket", "policy",
          "line_punct_exclude_zero"}
_PARAMS = {"stop_words", "skip_frac_cjk", "short_line_length", "max_word_length", "min_words_per_line"}


def check_filters(filters: Mapping[str, Any], feature_names: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Validate `[filter.*]` tables (a typo fails before any work) and fill in the defaults.

    `bounds` maps a feature name to `{min = x, max = y}`; the others are rule sets of RULE_SETS.
    """
    known = [*RULE_SETS, "bounds"]
    result: dict[str, dict[str, Any]] = {}
    for name, table in filters.items():
        if name not in known:
            raise UserError(f"unknown filter rule set {name!r}; known: {', '.join(known)}")
        if not isinstance(table, Mapping):
            raise UserError(f"[filter.{name}] must be a table, e.g. [filter.{name}] on a line of its own")
        if name == "bounds":
            result[name] = _check_bounds(table, feature_names)
            continue
        defaults = RULE_SETS[name]
        settings = dict(defaults)
        for key, value in table.items():
            if key not in defaults:
                raise UserError(f"unknown threshold {key!r} in [filter.{name}]; known: {', '.join(defaults)}")
            settings[key] = _check_value(name, key, value, defaults[key])
        result[name] = settings
    return result


def _check_value(name: str, key: str, value: Any, default: Any) -> Any:
    where = f"[filter.{name}] {key}"
    if key == "stop_words":
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise UserError(f"{where} must be a list of strings")
        return value
    if key in _FLAGS:
        if not isinstance(value, bool):
            raise UserError(f"{where} must be true or false")
        return value
    if value is False and key not in _PARAMS:
        return False  # this check is off
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise UserError(f"{where} must be a number{'' if key in _PARAMS else ' or false (off)'}")
    return type(default)(value) if isinstance(default, int) and float(value).is_integer() else float(value)


def _check_bounds(table: Mapping[str, Any], feature_names: Mapping[str, Any]) -> dict[str, Any]:
    result = {}
    for feature, bound in table.items():
        if feature not in feature_names:
            raise UserError(f"unknown feature {feature!r} in [filter.bounds]; known: {', '.join(feature_names)}")
        if not isinstance(bound, Mapping) or not bound or set(bound) - {"min", "max"}:
            raise UserError(f"[filter.bounds] {feature} must be {{min = X}}, {{max = Y}} or {{min = X, max = Y}}")
        for side, value in bound.items():
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise UserError(f"[filter.bounds] {feature}.{side} must be a number")
        result[feature] = dict(bound)
    return result


@dataclass
class Verdict:
    """What the rules decided for a batch: which documents stay, and why the others went."""

    keep: np.ndarray
    rule: np.ndarray  # per document: index into `names` of the first rule it failed, -1 if none
    names: list[str]
    value: np.ndarray  # the failing value (NaN where none)
    threshold: np.ndarray
    skipped: dict[str, int] = field(default_factory=dict)  # rule set -> documents it skipped (CJK)

    def counts(self) -> dict[str, int]:
        """First rule failed -> documents, in rule order, rules that removed nothing left out."""
        per_rule = np.bincount(self.rule[self.rule >= 0], minlength=len(self.names))
        return {name: int(c) for name, c in zip(self.names, per_rule.tolist(), strict=True) if c}


# First bytes of a text that trimming whitespace cannot remove: printable ASCII, and the lead bytes of characters
# above U+007F other than those that begin Unicode's whitespace there.
_PLAIN_FIRST = np.zeros(256, bool)
_PLAIN_FIRST[0x21:0x7F] = True
_PLAIN_FIRST[0xC2:0xF5] = True
_PLAIN_FIRST[list(SPACE_LEADS)] = False


def blank(texts: pa.Array) -> np.ndarray:
    """Which texts are empty once whitespace is trimmed (a null one is). A text that starts with a byte that cannot
    begin whitespace is not: only the others go through Arrow's trim, which copies them (~0.5 ms per MiB)."""
    data, offsets = utf8_of(texts)
    starts, ends = offsets[:-1], offsets[1:]
    first = data[np.minimum(starts, len(data) - 1)] if len(data) else np.zeros(len(texts), np.uint8)
    plain = (ends > starts) & _PLAIN_FIRST[first]
    if texts.null_count:
        plain &= numpy_of(texts.is_valid())
    out = np.zeros(len(texts), bool)
    if not plain.all():
        rest = np.flatnonzero(~plain)
        trimmed = pc.utf8_trim_whitespace(texts.take(arrow_of(rest, pa.int64())))
        out[rest] = numpy_of(pc.utf8_length(trimmed), fill=0) == 0
    return out


# A check: (rule name, values, fails-when "<" or ">" the threshold, threshold)
_Check = tuple[str, np.ndarray, str, float]


def judge(checks: list[_Check], n: int, skipped: dict[str, int] | None = None) -> Verdict:
    """Evaluate checks in order; each document goes to the first it fails (NaN values never fail)."""
    names = [c[0] for c in checks]
    if not checks:
        return Verdict(np.ones(n, bool), np.full(n, -1), names, np.full(n, np.nan), np.full(n, np.nan), skipped or {})
    values = np.stack([np.asarray(c[1], np.float64) for c in checks])
    thresholds = np.array([c[3] for c in checks], np.float64)[:, None]
    below = np.array([c[2] == "<" for c in checks])[:, None]
    with np.errstate(invalid="ignore"):
        fails = np.where(below, values < thresholds, values > thresholds)
    failed = fails.any(axis=0)
    first = np.argmax(fails, axis=0)
    cols = np.arange(n)
    return Verdict(
        ~failed,
        np.where(failed, first, -1),
        names,
        np.where(failed, values[first, cols], np.nan),
        np.where(failed, thresholds[first, 0], np.nan),
        skipped or {},
    )


def merge(first: Verdict, second: Verdict) -> Verdict:
    """The verdict of two rule lists applied one after the other to the same documents."""
    take = ~first.keep
    return Verdict(
        first.keep & second.keep,
        np.where(take, first.rule, np.where(second.rule >= 0, second.rule + len(first.names), -1)),
        first.names + second.names,
        np.where(take, first.value, second.value),
        np.where(take, first.threshold, second.threshold),
        {k: first.skipped.get(k, 0) + second.skipped.get(k, 0)
         for k in dict.fromkeys([*first.skipped, *second.skipped])},
    )




@functools.cache
def _classes() -> np.ndarray:
    """Class bits of every code point: Python's isspace/isalpha, Unicode Nd, CJK as frac_cjk (all from the
    feature tables); punctuation as datatrove's PUNCTUATION_SET approximately: Unicode P*, the ASCII symbols
    and the control characters, whitespace excepted. Kept in prep's cache directory (building it costs ~0.07 s
    in each process that judges texts), keyed by the feature table, pyarrow's version (its regex engine's
    classes) and this module's and the class bits' code."""
    from prep.text import _codes, features

    class_ids, masks = features._char_classes()
    bits = masks[class_ids]
    recipe = hashlib.sha256(bits.tobytes())
    for module in (__file__, _codes.__file__):
        recipe.update(Path(module).read_bytes())
    return cached_table("filter-classes", f"{recipe.hexdigest()} {pa.__version__}", lambda: _build_classes(bits))


def _build_classes(bits: np.ndarray) -> np.ndarray:
    from prep.text import features

    space = (bits & features._SPACE) > 0
    punct = (bits & features._PUNCT) > 0
    punct[:0x20] = punct[0x7F:0xA0] = True
    ascii_chars = np.arange(0x80)
    alnum = np.array([chr(c).isalnum() for c in range(0x80)])
    punct[ascii_chars[~alnum]] = True
    punct &= ~space
    table = np.zeros(0x110000, np.uint8)
    table[space] |= SPACE
    table[punct] |= PUNCT
    table[(bits & features._ALPHA) > 0] |= ALPHA
    table[(bits & features._DIGIT) > 0] |= DIGIT
    table[(bits & features._CJK) > 0] |= CJK
    table[_regex_punctuation()] |= UNICODE_PUNCT
    table[[ord(ch) for ch in TERMINAL_PUNCTUATION]] |= TERMINAL
    table[[ord(ch) for ch in ".#\u2026\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"]] |= COUNTED  # and line breaks
    return table


def _regex_punctuation() -> np.ndarray:
    """The code points of the regex class \\pP in Arrow's regex engine (RE2), whose Unicode tables may be older
    than Python's: asked of the engine itself (~0.1 s), so that C4's compiled sentence count is the regex's."""
    cps = np.arange(0x110000)
    cps = cps[(cps < 0xD800) | (cps >= 0xE000)]  # surrogates are no UTF-8
    offsets = np.zeros(len(cps) + 1, np.int32)
    np.cumsum(1 + (cps >= 0x80) + (cps >= 0x800) + (cps >= 0x10000), out=offsets[1:])
    data = cps.astype("<u4").tobytes().decode("utf-32-le").encode()
    chars = pa.Array.from_buffers(pa.string(), len(cps), [None, pa.py_buffer(offsets), pa.py_buffer(data)])
    return cps[numpy_of(pc.match_substring_regex(chars, r"^\pP$"))]


def prepare(compiled: bool = False) -> None:
    """Build the lookup table now (from the feature tables, which it builds first if need be), e.g. once in the
    forkserver before workers fork; with `compiled`, also load the rules' compiled loops (numba: ~0.7 s a
    process from its cache, longer the first time ever), so that a worker does it before its first chunk."""
    _classes()
    if compiled:
        texts = binary_array([b"A line.\n\nA [1] line...", b""], pa.string())
        text_verdict(texts, check_filters(dict.fromkeys(RULE_SETS, {}), {}))




class _Rule(NamedTuple):
    """A check of a rule set, as the compiled loop judges it (`_kernels.measure`'s `checks`): its value is the
    column `of`, divided by the column `per` if any (`if_none` where that is 0), a value of 0 counting as none
    with `zero_is_none`; it fails when `op` ("<" or ">") the threshold; no value (NaN) never fails."""

    name: str
    of: str
    per: str | None
    op: str
    threshold: Any
    if_none: float = 0.0
    zero_is_none: bool = False


class _Program(NamedTuple):
    """The rule sets of a pipeline as the compiled loop takes them: the rules' names and thresholds, each rule
    set's `skip_frac_cjk`, and `_kernels.measure`'s arguments after the texts'."""

    names: list[str]
    thresholds: np.ndarray  # then NaN, the threshold of "no rule"
    skip: dict[str, float]
    args: tuple


_programs: dict[str, _Program] = {}


def _program(rule_sets: Mapping[str, Mapping[str, Any]]) -> _Program:
    """The `_Program` of these rule sets, built once per settings (building it was most of a batch's Python time)."""
    key = repr(rule_sets)
    if key not in _programs:
        if len(_programs) >= 16:
            _programs.clear()
        _programs[key] = _build(rule_sets)
    return _programs[key]


def _build(rule_sets: Mapping[str, Mapping[str, Any]]) -> _Program:
    from prep.text import _kernels

    rules = [[r for r in _RULES[name](settings) if r.threshold is not False] for name, settings in rule_sets.items()]
    names = ("gopher_quality", "gopher_repetition", "c4", "fineweb")  # the order of `_kernels`' rule set bits
    order = np.array([1 << names.index(name) for name in rule_sets], np.int64)
    skip_cjk = np.array([rule_sets[name]["skip_frac_cjk"] if name in rule_sets else np.inf for name in names], float)
    column = {name: k for k, name in enumerate(_kernels.COLUMNS)}
    checks = np.array([[column[r.of], column[r.per] if r.per else -1, r.if_none, r.zero_is_none, r.op == "<",
                        float(r.threshold)] for set_rules in rules for r in set_rules], np.float64).reshape(-1, 6)
    quality = rule_sets.get("gopher_quality", RULE_SETS["gopher_quality"])
    stops = np.unique(np.array([_hash_word(w) for w in quality["stop_words"]], np.uint64))
    c4 = rule_sets.get("c4", RULE_SETS["c4"])
    longest_word = np.inf if c4["max_word_length"] == -1 else c4["max_word_length"]
    needles = ["lorem ipsum", "javascript", *POLICY_SUBSTRINGS]
    needle_chars = np.array([ord(ch) for ch in "".join(needles)], np.int32)
    needle_ends = np.cumsum([len(w) for w in needles])
    args = (
        _classes(), order, skip_cjk, checks, np.cumsum([len(r) for r in rules], dtype=np.int64),
        stops, np.array([longest_word, c4["min_words_per_line"]], np.float64),
        np.array([c4[flag] for flag in _kernels.C4_FLAGS], np.bool_),
        needle_chars, needle_ends, _kernels._shift_table(needle_chars, needle_ends),
        float(rule_sets.get("fineweb", RULE_SETS["fineweb"])["short_line_length"]),
    )
    return _Program(
        [f"{name}.{r.name}" for name, set_rules in zip(rule_sets, rules, strict=True) for r in set_rules],
        np.array([float(r.threshold) for set_rules in rules for r in set_rules] + [np.nan]),
        {name: settings["skip_frac_cjk"] for name, settings in rule_sets.items()},
        args,
    )


def _judged(texts: pa.Array, program: _Program) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Per text, the numbers of `_kernels.COLUMNS` it was measured for, the first of the program's rules it
    fails (-1: none) and that rule's value: one compiled call over the texts' UTF-8 bytes (read in place: no
    conversion of the batch), which measures a text only for the rules still to judge.
    """
    from prep.text import _kernels

    if isinstance(texts, pa.ChunkedArray):
        texts = texts.combine_chunks()
    data, offsets = utf8_of(texts)
    starts, ends = offsets[:-1], offsets[1:].copy()
    if texts.null_count:  # null: empty
        ends[numpy_of(texts.is_null())] = starts[numpy_of(texts.is_null())]
    out, first, value = _kernels.measure(data, starts, ends, *program.args,
                                         *_arena(int(np.max(ends - starts, initial=0)) + 1))
    return dict(zip(_kernels.COLUMNS, out.T, strict=True)), first, value


_ARENA_KEPT = 1 << 21  # characters: the arena for texts this long (~250 MB of address space) is kept
_arenas: list[tuple[np.ndarray, int]] = []


def _arena(size: int) -> tuple[np.ndarray, int]:
    """The scratch arena of `_kernels.measure` for texts of fewer than `size` characters, and the size it is
    laid out for. Kept from batch to batch, so that a batch neither allocates nor clears scratch (clearing the
    hash table each time cost more than the rules' work), unless it is for longer texts than `_ARENA_KEPT`."""
    from prep.text import _kernels

    if _arenas and _arenas[0][1] >= size:
        return _arenas[0]
    size = max(size, 2 * _arenas[0][1] if _arenas else 1 << 16)
    arena = (np.zeros(_kernels.layout(size)[-1], np.uint8), size)
    if size <= _ARENA_KEPT:
        _arenas[:] = [arena]
    return arena


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    return np.divide(num, den, out=np.zeros(len(num)), where=den > 0)


def _gopher_quality(s: dict[str, Any]) -> list[_Rule]:
    return [
        _Rule("min_words", "content_words", None, "<", s["min_words"]),
        _Rule("max_words", "content_words", None, ">", s["max_words"]),
        _Rule("min_mean_word_length", "content_chars", "content_words", "<", s["min_mean_word_length"], np.nan),
        _Rule("max_mean_word_length", "content_chars", "content_words", ">", s["max_mean_word_length"], np.nan),
        _Rule("max_hash_ratio", "hashes", "words", ">", s["max_hash_ratio"]),
        _Rule("max_ellipsis_ratio", "ellipses", "words", ">", s["max_ellipsis_ratio"]),
        _Rule("max_bullet_lines", "bullet_lines", "lines", ">", s["max_bullet_lines"]),
        _Rule("max_ellipsis_lines", "ellipsis_lines", "lines", ">", s["max_ellipsis_lines"]),
        _Rule("min_alpha_words", "alpha_words", "words", "<", s["min_alpha_words"]),
        _Rule("min_stop_words", "stop_words", None, "<", s["min_stop_words"]),
    ]


def _hash_word(word: str) -> np.uint64:
    """The token hash of `_kernels.measure` for one word."""
    value = sum(ord(ch) * pow(int(HASH_BASE), i, 1 << 64) for i, ch in enumerate(word))
    return np.uint64((value + len(word)) % (1 << 64))


def _gopher_repetition(s: dict[str, Any]) -> list[_Rule]:
    return [
        _Rule("empty", "empty", None, ">", 0.5),
        _Rule("max_dup_para_frac", "dup_paragraphs", "paragraphs", ">", s["max_dup_para_frac"]),
        _Rule("max_dup_para_char_frac", "dup_paragraph_chars", "chars", ">", s["max_dup_para_char_frac"]),
        _Rule("max_dup_line_frac", "dup_line_runs", "line_runs", ">", s["max_dup_line_frac"]),
        _Rule("max_dup_line_char_frac", "dup_line_run_chars", "chars", ">", s["max_dup_line_char_frac"]),
        *(_Rule(f"max_top_{n}gram", f"top_{n}gram", "chars", ">", s[f"max_top_{n}gram"]) for n in (2, 3, 4)),
        *(_Rule(f"max_dup_{n}gram", f"dup_{n}gram", "chars", ">", s[f"max_dup_{n}gram"]) for n in range(5, 11)),
    ]


def _c4(s: dict[str, Any]) -> list[_Rule]:
    # a document goes for the first line with "lorem ipsum" or "{" (lorem ipsum first when it is the same line)
    rules = []
    if s["lorem_ipsum"]:
        rules.append(_Rule("lorem_ipsum", "lorem", None, ">", 0.5))
    if s["curly_bracket"]:
        rules.append(_Rule("curly_bracket", "curly", None, ">", 0.5))
    if s["min_sentences"] is not False and s["min_sentences"] != -1:
        rules.append(_Rule("min_sentences", "sentences", None, "<", s["min_sentences"]))
    return rules


def _fineweb(s: dict[str, Any]) -> list[_Rule]:
    return [  # blank lines are left out
        _Rule("empty", "no_content_lines", None, ">", 0.5),
        _Rule("min_line_punct", "punct_lines", "content_lines", "<", s["min_line_punct"],
              zero_is_none=s["line_punct_exclude_zero"]),
        _Rule("max_short_lines", "short_lines", "content_lines", ">", s["max_short_lines"]),
        _Rule("max_dup_line_chars", "dup_content_line_chars", "chars_but_newlines", ">", s["max_dup_line_chars"]),
        _Rule("max_newline_words", "newlines", "words", ">", s["max_newline_words"]),
    ]


_RULES = {"gopher_quality": _gopher_quality, "gopher_repetition": _gopher_repetition, "c4": _c4,
          "fineweb": _fineweb}


def text_verdict(texts: pa.Array, filters: Mapping[str, Mapping[str, Any]]) -> Verdict:
    """Apply the rule sets (not the bounds) to a batch of texts, in the order given."""
    rule_sets = {name: settings for name, settings in filters.items() if name != "bounds"}
    if not rule_sets:
        return judge([], len(texts))
    program = _program(rule_sets)
    m, first, value = _judged(texts, program)
    frac_cjk = _ratio(m["cjk"], m["chars"])
    skipped = {name: int((frac_cjk > skip).sum()) for name, skip in program.skip.items()}
    return Verdict(first < 0, first, list(program.names), value, program.thresholds[first], skipped)


def bounds_verdict(features: Mapping[str, pa.Array], bounds: Mapping[str, Mapping[str, float]], n: int) -> Verdict:
    """Apply `[filter.bounds]` to computed feature columns."""
    checks: list[_Check] = []
    for feature, bound in bounds.items():
        values = numpy_of(features[feature].cast(pa.float64()), fill=np.nan)
        for side, op in (("min", "<"), ("max", ">")):
            if side in bound:
                checks.append((f"bounds.{feature}.{side}", values, op, float(bound[side])))
    return judge(checks, n)
