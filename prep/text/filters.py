"""Quality filter rules: the Gopher, C4 and FineWeb heuristics, and simple bounds on any feature.

The rule sets and their defaults are those of datatrove (`GopherQualityFilter`,
`GopherRepetitionFilter`, `C4QualityFilter`, `FineWebQualityFilter`, datatrove 0.10). They are
computed for a whole batch at once: the texts are decoded once to one array of code points,
classified through lookup tables, and cut into words the way spaCy's blank English tokenizer
(datatrove's word splitter for English) cuts them, approximately: a whitespace-separated word
loses its leading and trailing punctuation as tokens of their own (a run of dots is one token),
a hyphen between letters splits a word in three and an apostrophe between letters in two.
Words, lines, paragraphs and their repeats are found by compiled loops over the code points
(`prep.text._kernels`, numba, loaded only when a rule set is configured); words, lines and
n-grams are compared by 64-bit hashes, grouped in a small hash table per text. Arrow's string
kernels remain for C4's checks of the few lines it keeps.

Each document is judged by the rules in order (rule sets in the order of the pipeline file, the
checks of a set in datatrove's order) and counted under the first rule it fails. A rule set
written for English is skipped for documents whose `frac_cjk` exceeds its `skip_frac_cjk`;
those documents are counted as skipped, not dropped.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from prep.errors import UserError
from prep.text._codes import ALPHA, CJK, DIGIT, HASH_BASE, PUNCT, SPACE, TERMINAL

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
_SPLITLINES = "\r\n|[\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]"  # what Python's str.splitlines() breaks at
_CITATION = r"\[\d*]|\[edit]|\[citation needed]"
# a sentence ends at a lone . ! or ? (then any punctuation) before a word (spaCy's sentencizer)
_SENTENCE_BREAK = r"(?:^|[^.!?])[.!?][\pP]*\s+\pP*[^\s\pP]"

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
    and the control characters, whitespace excepted."""
    from prep.text import features

    class_ids, _, masks = features._char_classes()
    bits = masks[class_ids]
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
    table[[ord(ch) for ch in TERMINAL_PUNCTUATION]] |= TERMINAL
    return table


def prepare(compiled: bool = False) -> None:
    """Build the lookup table now (from the feature tables, which it builds first if need be), e.g. once in the
    forkserver before workers fork; with `compiled`, also load the rules' compiled loops (numba: ~0.7 s a
    process from its cache, longer the first time ever), so that a worker does it before its first chunk."""
    _classes()
    if compiled:
        text_verdict(pa.array(["A line.\n\nA [1] line...", ""]), check_filters(dict.fromkeys(RULE_SETS, {}), {}))




def _unique_first(keys: np.ndarray, doc: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(group id of each integer key, its group's size, whether it is its group's first occurrence); keys of
    different texts (`doc`, ascending) never group together."""
    from prep.text import _kernels

    return _kernels.group_first(keys.astype(np.uint64, copy=False), doc)


def _code_points(strings: pa.Array) -> np.ndarray:
    """The code points of all strings of an Arrow string array, one after the other."""
    offset_type = np.int64 if pa.types.is_large_string(strings.type) else np.int32
    _, offsets_buf, data_buf = strings.buffers()
    offsets = np.frombuffer(offsets_buf, offset_type)[strings.offset : strings.offset + len(strings) + 1]
    if data_buf is None or not len(offsets) or offsets[-1] == offsets[0]:
        return np.zeros(0, np.uint32)
    text = str(memoryview(data_buf)[int(offsets[0]) : int(offsets[-1])], "utf-8")
    return np.frombuffer(text.encode("utf-32-le"), np.uint32)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    return np.divide(num, den, out=np.zeros(len(num)), where=den > 0)


class Texts:
    """Lazily computed pieces of a batch of texts that the rules share."""

    def __init__(self, texts: pa.Array) -> None:
        self.texts = texts.fill_null("") if texts.null_count else texts
        self.n = len(texts)

    @functools.cached_property
    def num_chars(self) -> np.ndarray:
        return np.asarray(pc.utf8_length(self.texts), np.int64)

    @functools.cached_property
    def code_points(self) -> tuple[np.ndarray, np.ndarray]:
        """(code points of all texts, char offsets of each text)."""
        return _code_points(self.texts), np.concatenate(([0], np.cumsum(self.num_chars)))

    @functools.cached_property
    def tokens(self) -> dict[str, np.ndarray]:
        """The words as spaCy's blank English tokenizer cuts them (see the module doc), per token."""
        from prep.text import _kernels

        cps, offsets = self.code_points
        names = ("len", "other", "alpha", "doc", "hash")
        return dict(zip(names, _kernels.tokens(cps, _classes(), offsets), strict=True))

    @functools.cached_property
    def char_counts(self) -> np.ndarray:
        """CJK characters, "#", ellipses and newlines per text: one column each."""
        from prep.text import _kernels

        cps, offsets = self.code_points
        return _kernels.char_counts(cps, _classes(), offsets)

    @functools.cached_property
    def frac_cjk(self) -> np.ndarray:
        return _ratio(self.char_counts[:, 0], self.num_chars)

    def per_text(self, values: np.ndarray) -> np.ndarray:
        """Sum of per-token values over each text's tokens."""
        return np.bincount(self.tokens["doc"], weights=values, minlength=self.n)

    @functools.cached_property
    def num_tokens(self) -> np.ndarray:
        return np.bincount(self.tokens["doc"], minlength=self.n)

    @property
    def hashes(self) -> np.ndarray:
        return self.char_counts[:, 1]

    @property
    def ellipses(self) -> np.ndarray:
        return self.char_counts[:, 2]

    @property
    def newlines(self) -> np.ndarray:
        return self.char_counts[:, 3]

    @functools.cached_property
    def splitlines(self) -> dict[str, np.ndarray]:
        """The lines of all texts as str.splitlines() gives them: text, first char and end char of each, and
        the two marks gopher_quality counts (see `_kernels.splitlines`)."""
        from prep.text import _kernels

        cps, offsets = self.code_points
        names = ("doc", "start", "end", "bullet", "ellipsis")
        return dict(zip(names, _kernels.splitlines(cps, _classes(), offsets), strict=True))

    def split(self, min_run: int, trim: bool = False) -> dict[str, np.ndarray]:
        """Text, first char, end char, hash and whether it has a non-whitespace character, of each piece between
        newline separators (see `_kernels.newline_pieces`)."""
        from prep.text import _kernels

        cps, offsets = self.code_points
        names = ("doc", "start", "end", "hash", "content")
        return dict(zip(names, _kernels.newline_pieces(cps, _classes(), offsets, min_run, trim), strict=True))

    @functools.cached_property
    def newline_pieces(self) -> dict[str, np.ndarray]:
        """The pieces between every two "\n" (`split(0)`), which fineweb and gopher_repetition share."""
        return self.split(0)

    @functools.cached_property
    def line_run_pieces(self) -> np.ndarray:
        """Which of `newline_pieces` are the pieces of a split at runs of "\n" (regex \n+): the non-empty ones,
        and the first and last of each text even when empty."""
        pieces = self.newline_pieces
        doc = pieces["doc"]
        edge = np.ones(len(doc) + 1, bool)
        np.not_equal(doc[1:], doc[:-1], out=edge[1:-1])
        return (pieces["end"] > pieces["start"]) | edge[:-1] | edge[1:]

    def duplicates(self, pieces: Mapping[str, np.ndarray], keep: np.ndarray | None = None
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(pieces per text, repeated pieces per text, characters of the repeated ones), as datatrove's
        find_duplicates: a piece repeats when an equal one (by 64-bit hash) came earlier in the same text.
        `keep`: the pieces to count, all if None."""
        doc, chars, hashes = pieces["doc"], pieces["end"] - pieces["start"], pieces["hash"]
        if keep is not None:
            doc, chars, hashes = doc[keep], chars[keep], hashes[keep]
        _, _, first = _unique_first(hashes, doc)
        repeated = ~first
        return (np.bincount(doc, minlength=self.n), np.bincount(doc[repeated], minlength=self.n),
                np.bincount(doc[repeated], weights=chars[repeated], minlength=self.n))

    @functools.cached_property
    def ngrams(self) -> dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """n -> (first token of every n-gram that may repeat, how often it occurs in its text, whether this is
        its first occurrence), n = 2..10; an n-gram at no listed position occurs once in its text.

        2-grams are grouped by a 64-bit key of (text, token, next token) over pairs inside one text. An
        n-gram can repeat only where the (n-1)-grams at its first and second token repeat, so a level only
        groups those positions, by a key of (group of the (n-1)-gram, last token).
        """
        from prep.text import _kernels

        at, count, first, bounds = _kernels.ngram_levels(self.tokens["hash"], self.tokens["doc"], 10)
        spans = zip(range(2, 11), bounds[:-1].tolist(), bounds[1:].tolist(), strict=True)
        return {n: (at[a:b], count[a:b], first[a:b]) for n, a, b in spans}

    @functools.cached_property
    def token_chars(self) -> np.ndarray:
        return np.concatenate(([0], np.cumsum(self.tokens["len"])))


def _gopher_quality(t: Texts, s: dict[str, Any]) -> list[_Check]:
    tok = t.tokens
    words = t.num_tokens.astype(np.float64)
    other = tok["other"]
    content = t.per_text(other.astype(np.float64))  # words with a character that is not punctuation
    content_chars = t.per_text(np.where(other, tok["len"], 0).astype(np.float64))
    mean_length = np.divide(content_chars, content, out=np.full(t.n, np.nan), where=content > 0)
    lines = t.splitlines
    line_doc = lines["doc"]
    num_lines = np.bincount(line_doc, minlength=t.n)
    bullet, ellipsis_end = lines["bullet"], lines["ellipsis"]
    stop = np.array([_hash_word(w) for w in s["stop_words"]], np.uint64)
    is_stop = np.isin(tok["hash"], stop)
    stop_doc = tok["doc"][is_stop]
    _, _, first = _unique_first(tok["hash"][is_stop], stop_doc)
    distinct_stops = np.bincount(stop_doc[first], minlength=t.n)
    return [
        ("min_words", content, "<", s["min_words"]),
        ("max_words", content, ">", s["max_words"]),
        ("min_mean_word_length", mean_length, "<", s["min_mean_word_length"]),
        ("max_mean_word_length", mean_length, ">", s["max_mean_word_length"]),
        ("max_hash_ratio", _ratio(t.hashes, words), ">", s["max_hash_ratio"]),
        ("max_ellipsis_ratio", _ratio(t.ellipses, words), ">", s["max_ellipsis_ratio"]),
        ("max_bullet_lines", _ratio(np.bincount(line_doc[bullet], minlength=t.n), num_lines), ">",
         s["max_bullet_lines"]),
        ("max_ellipsis_lines", _ratio(np.bincount(line_doc[ellipsis_end], minlength=t.n), num_lines), ">",
         s["max_ellipsis_lines"]),
        ("min_alpha_words", _ratio(t.per_text(tok["alpha"].astype(np.float64)), words), "<", s["min_alpha_words"]),
        ("min_stop_words", distinct_stops, "<", s["min_stop_words"]),
    ]


def _hash_word(word: str) -> np.uint64:
    """The token hash of `Texts.tokens` for one word."""
    value = sum(ord(ch) * pow(int(HASH_BASE), i, 1 << 64) for i, ch in enumerate(word))
    return np.uint64((value + len(word)) % (1 << 64))


def _gopher_repetition(t: Texts, s: dict[str, Any]) -> list[_Check]:
    chars = t.num_chars
    p_count, p_dup, p_dup_chars = t.duplicates(t.split(2, trim=True))  # regex \n{2,} on the stripped text
    l_count, l_dup, l_dup_chars = t.duplicates(t.newline_pieces, t.line_run_pieces)  # regex \n+
    checks = [
        ("empty", (chars == 0).astype(np.float64), ">", 0.5),
        ("max_dup_para_frac", _ratio(p_dup, p_count), ">", s["max_dup_para_frac"]),
        ("max_dup_para_char_frac", _ratio(p_dup_chars, chars), ">", s["max_dup_para_char_frac"]),
        ("max_dup_line_frac", _ratio(l_dup, l_count), ">", s["max_dup_line_frac"]),
        ("max_dup_line_char_frac", _ratio(l_dup_chars, chars), ">", s["max_dup_line_char_frac"]),
    ]
    cumulative = t.token_chars
    doc_of = t.tokens["doc"]
    tokens = t.num_tokens
    first_token = np.concatenate(([0], np.cumsum(tokens)))[:-1]
    for n in (2, 3, 4):
        # no n-gram repeats: the first one, once (datatrove's Counter.most_common(1))
        has = tokens >= n
        top = np.zeros(t.n)
        top[has] = cumulative[first_token[has] + n] - cumulative[first_token[has]] + (n - 1)
        at, count, _ = t.ngrams[n]
        at, count = at[count >= 2], count[count >= 2]
        if len(at):
            doc = doc_of[at]
            seg = np.flatnonzero(np.concatenate(([True], doc[1:] != doc[:-1])))
            best = np.maximum.reduceat(count, seg)
            pick = np.flatnonzero(count == np.repeat(best, np.diff(np.append(seg, len(at)))))
            pick = pick[np.concatenate(([True], doc[pick][1:] != doc[pick][:-1]))]  # the first to occur wins
            gram_chars = cumulative[at[pick] + n] - cumulative[at[pick]] + (n - 1)
            top[doc[pick]] = count[pick] * gram_chars
        checks.append((f"max_top_{n}gram", _ratio(top, chars), ">", s[f"max_top_{n}gram"]))
    for n in range(5, 11):
        checks.append((f"max_dup_{n}gram", _ratio(_greedy_duplicates(t, n), chars), ">", s[f"max_dup_{n}gram"]))
    return checks


def _greedy_duplicates(t: Texts, n: int) -> np.ndarray:
    """Characters of repeated n-grams as datatrove's find_all_duplicate counts them."""
    from prep.text import _kernels

    at, _, first = t.ngrams[n]
    rep = at[~first]
    return _kernels.greedy_duplicates(rep, t.tokens["doc"][rep], t.token_chars, n, t.n)


def _c4(t: Texts, s: dict[str, Any]) -> list[_Check]:
    from prep.text import _kernels

    cps, _ = t.code_points
    lines = t.splitlines
    line_doc = lines["doc"]
    n_lines = len(line_doc)
    start, end, words, longest, terminal = _kernels.c4_lines(
        cps, _classes(), lines["start"], lines["end"], s["remove_citations"])
    ok = np.ones(n_lines, bool)
    if s["max_word_length"] is not False and s["max_word_length"] != -1:
        ok &= longest <= s["max_word_length"]
    if s["terminal_punct"]:
        ok &= terminal
    if s["min_words_per_line"] is not False:
        ok &= words >= s["min_words_per_line"]
    # the remaining checks only concern the lines still kept (few, usually): look at those alone
    live = np.flatnonzero(ok)
    joined = _kernels.gather(cps, start[live], end[live]).tobytes().decode("utf-32-le")
    kept_lines = pc.list_flatten(pc.split_pattern(pa.array([joined]), "\n")).slice(0, len(live))
    if s["remove_citations"]:
        kept_lines = pc.replace_substring_regex(kept_lines, _CITATION, "")
    lower = pc.utf8_lower(kept_lines)

    def where(array: pa.Array, pattern: str, regex: bool = False) -> np.ndarray:
        hit = np.zeros(n_lines, bool)
        hit[live] = np.asarray((pc.match_substring_regex if regex else pc.match_substring)(array, pattern), bool)
        return hit

    drops: list[tuple[str, np.ndarray]] = []
    if s["lorem_ipsum"]:
        drops.append(("lorem_ipsum", where(lower, "lorem ipsum")))
    if s["javascript"]:
        ok &= ~where(lower, "javascript")
    if s["curly_bracket"]:
        drops.append(("curly_bracket", ok & where(kept_lines, "{")))
    if s["policy"]:
        ok &= ~where(lower, "|".join(POLICY_SUBSTRINGS), regex=True)
    index = np.arange(n_lines)
    first_drop = {}
    for name, hit in drops:
        first = np.full(t.n, np.iinfo(np.int64).max)
        np.minimum.at(first, line_doc[hit], index[hit])
        first_drop[name] = first
    checks: list[_Check] = []
    if first_drop:
        earliest = np.minimum.reduce(list(first_drop.values()))
        for name, first in first_drop.items():
            hit = (first == earliest) & (first < np.iinfo(np.int64).max)
            checks.append((name, hit.astype(np.float64), ">", 0.5))
    if s["min_sentences"] is not False and s["min_sentences"] != -1:
        breaks = np.zeros(n_lines, np.int64)
        breaks[live] = np.asarray(pc.count_substring_regex(kept_lines, _SENTENCE_BREAK), np.int64) + 1
        sentences = np.bincount(line_doc[ok], weights=breaks[ok], minlength=t.n)
        checks.append(("min_sentences", sentences, "<", s["min_sentences"]))
    return checks


def _fineweb(t: Texts, s: dict[str, Any]) -> list[_Check]:
    pieces = t.newline_pieces  # blank lines are left out
    content = pieces["content"]
    doc, chars, end = pieces["doc"][content], (pieces["end"] - pieces["start"])[content], pieces["end"][content]
    count = np.bincount(doc, minlength=t.n)
    cps, _ = t.code_points
    punct = (_classes()[cps[end - 1]] & TERMINAL) > 0
    punct_ratio = _ratio(np.bincount(doc[punct], minlength=t.n), count)
    if s["line_punct_exclude_zero"]:
        punct_ratio = np.where(punct_ratio == 0, np.nan, punct_ratio)
    short = chars <= s["short_line_length"]
    _, _, dup_chars = t.duplicates(pieces, content)
    newlines = t.newlines
    return [
        ("empty", (count == 0).astype(np.float64), ">", 0.5),
        ("min_line_punct", punct_ratio, "<", s["min_line_punct"]),
        ("max_short_lines", _ratio(np.bincount(doc[short], minlength=t.n), count), ">", s["max_short_lines"]),
        ("max_dup_line_chars", _ratio(dup_chars, t.num_chars - newlines), ">", s["max_dup_line_chars"]),
        ("max_newline_words", _ratio(newlines, t.num_tokens), ">", s["max_newline_words"]),
    ]


_RULES = {"gopher_quality": _gopher_quality, "gopher_repetition": _gopher_repetition, "c4": _c4,
          "fineweb": _fineweb}


def text_verdict(texts: pa.Array, filters: Mapping[str, Mapping[str, Any]]) -> Verdict:
    """Apply the rule sets (not the bounds) to a batch of texts, in the order given."""
    t = Texts(texts)
    checks: list[_Check] = []
    skipped: dict[str, int] = {}
    for name, settings in filters.items():
        if name == "bounds":
            continue
        skip = t.frac_cjk > settings["skip_frac_cjk"]
        skipped[name] = int(skip.sum())
        for rule, values, op, threshold in _RULES[name](t, settings):
            if threshold is False:
                continue
            values = np.where(skip, np.nan, np.asarray(values, np.float64))
            checks.append((f"{name}.{rule}", values, op, float(threshold)))
    return judge(checks, t.n, skipped)


def bounds_verdict(features: Mapping[str, pa.Array], bounds: Mapping[str, Mapping[str, float]], n: int) -> Verdict:
    """Apply `[filter.bounds]` to computed feature columns."""
    checks: list[_Check] = []
    for feature, bound in bounds.items():
        values = np.asarray(features[feature].cast(pa.float64()))
        for side, op in (("min", "<"), ("max", ">")):
            if side in bound:
                checks.append((f"bounds.{feature}.{side}", values, op, float(bound[side])))
    return judge(checks, n)
