"""The filter rules' decisions, saved and compared: a change to how the rules are computed must not change them.

    PYTHONPATH=OLD_CHECKOUT .venv/bin/python scripts/filter_decisions.py save old.npz
    PYTHONPATH=. .venv/bin/python scripts/filter_decisions.py save new.npz
    .venv/bin/python scripts/filter_decisions.py compare old.npz new.npz

save: per document, the keep flag, the first rule failed and its failing value, from `text_verdict` of the
prep on PYTHONPATH (an old checkout: e.g. `git worktree add`), over the whole shared corpus in 1 MiB batches
and over randomized adversarial batches (punctuation, citation marks, abbreviations, line breaks of every
kind, CJK, long words, upper-case substrings, empty texts, an empty text last, string and large_string
arrays, arrays with an offset); each rule set alone, all four, and all four in reverse order.
compare: documents that differ in any of the three (values to rtol 1e-12), per source and rule list; exit
status 1 if any does.
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa

CORPUS = Path(__file__).resolve().parent.parent.parent / "shared" / "corpus"
CHUNK_BYTES = 1 << 20
PIECES = [
    "the", "and", "of", "to", "with", "have", "be", "that", "word", "Lorem ipsum", "lorem ipsum", "javascript",
    "JavaScript", "Terms of Use", "privacy policy", "uses cookies", "use cookies", "{", "}", "[1]", "[12]", "[]",
    "[edit]", "[citation needed]", "[Edit]", "e.g.", "U.S.", "A.", "Mr.", "...", "..", "....", "\u2026", ".", "!",
    "?", "?!", '"', "'", "'s", "don't", "co-op", "--", "-", "\u2022", "#", "##", "1+2", "3*4", "a/b", "x=y",
    "a,b", "http://x.y/z?a=b", '."', "!)", "(", ")", "\u3002", "\u4e2d\u6587", "\u6f22\u5b57\u3002", "\uff01",
    "caf\u00e9", "na\u00efve", "\u00a0", "\u3000", "\t", " ", "  ", "\n", "\n\n", "\n\n\n", "\r\n", "\r", "\x0b",
    "\x0c", "\x1c", "\x85", "\u2028", "\u2029", "\x00", "\x01", "\U0001f600", "\U00010a56", "\u0964", "123",
    "4.5", "x" * 1001, "y" * 40, "\u00bf", "\u00a1", "\u2019", "it\u2019s", "\u201c", "\u201d", "\u0301",
    "\ufeff", "\u200b", "z" * 12, "LOREM \u0130PSUM", "coo\u212aie policy", "JAVASCR\u0130PT", "Lorem[1] ipsum",
    "lorem [edit]ipsum", "[[1]]", "[citation needed].", "end.[1]", "x.[2][edit]", "a. B", "a.  \u00ab b", "\u00bb.",
]


def corpus_batches() -> Iterator[list[str]]:
    """Every file's texts in order, cut into batches of about 1 MiB of UTF-8."""
    for path in sorted(CORPUS.glob("*.jsonl.gz")):
        with gzip.open(path, "rt", encoding="utf-8") as f:
            batch, size = [], 0
            for line in f:
                text = json.loads(line).get("text") or ""
                batch.append(text)
                size += len(text.encode("utf-8", "surrogatepass"))
                if size >= CHUNK_BYTES:
                    yield batch
                    batch, size = [], 0
            if batch:
                yield batch


def adversarial_batches(seed: int = 14) -> list[list[str]]:
    """Texts of random pieces, repeated lines and paragraphs, and English texts with pieces put in."""
    rng = random.Random(seed)
    batches = []
    for _ in range(300):
        batch = []
        for _ in range(rng.randint(1, 12)):
            pool = PIECES if rng.random() < 0.7 else [*PIECES[:12], "\n", " ", ".", "\n\n"]
            length = rng.choice([0, 1, 5, 30, 120, 400, 1500])
            batch.append("".join(rng.choice(pool) + rng.choice(["", " ", " ", " ", "\n", "  "]) for _ in range(length)))
        if rng.random() < 0.3:
            batch.append("")
        if rng.random() < 0.3:
            line = " ".join(rng.choice(PIECES[:40]) for _ in range(rng.randint(1, 12)))
            batch.append(rng.choice(["\n", "\n\n", " ", "\r\n"]).join([line] * rng.randint(2, 20)))
        batches.append(batch)
    english = []
    for path in sorted(CORPUS.glob("en_*.jsonl.gz")):
        with gzip.open(path, "rt", encoding="utf-8") as f:
            english += [json.loads(line)["text"] for _, line in zip(range(400), f, strict=False)][::7]
    for _ in range(300):
        batch = []
        for _ in range(rng.randint(1, 8)):
            words = rng.choice(english).split(" ")
            for _ in range(rng.randint(0, 6)):
                words.insert(rng.randint(0, len(words)), rng.choice(PIECES))
            batch.append(" ".join(words))
        if rng.random() < 0.2:
            batch.append("")
        batches.append(batch)
    return batches


def save(out: Path) -> None:
    """Decisions of the prep on PYTHONPATH, see the module doc."""
    from prep.text.features import FEATURES
    from prep.text.filters import RULE_SETS, check_filters, text_verdict

    rule_lists = {name: {name: {}} for name in RULE_SETS}
    rule_lists["all"] = {name: {} for name in RULE_SETS}
    rule_lists["all_reversed"] = {name: {} for name in reversed(RULE_SETS)}
    result = {}
    for source, batches in (("corpus", list(corpus_batches())), ("adversarial", adversarial_batches())):
        for label, rules in rule_lists.items():
            settings = check_filters(rules, FEATURES)
            keep, rule, value = [], [], []
            for batch in batches:
                type_ = pa.large_string() if len(batch) % 2 else pa.string()
                texts = pa.array(["", *batch], type_).slice(1) if len(batch) % 3 == 0 else pa.array(batch, type_)
                verdict = text_verdict(texts, settings)
                keep.append(verdict.keep)
                value.append(verdict.value)
                rule.append(np.array([verdict.names[r] if r >= 0 else "" for r in verdict.rule.tolist()], str))
            result[f"{source}.{label}.keep"] = np.concatenate(keep)
            result[f"{source}.{label}.rule"] = np.concatenate(rule)
            result[f"{source}.{label}.value"] = np.concatenate(value)
            dropped = int((~result[f"{source}.{label}.keep"]).sum())
            print(f"{source} {label}: {len(result[f'{source}.{label}.keep']):,} documents, {dropped:,} dropped")
    np.savez_compressed(out, **result)


def compare(old: Path, new: Path) -> int:
    """Documents whose keep flag, first rule or failing value differ, per source and rule list."""
    a, b = np.load(old), np.load(new)
    if set(a.files) != set(b.files):
        print(f"different contents: {sorted(set(a.files) ^ set(b.files))}")
        return 1
    total = 0
    for key in sorted(k[: -len(".keep")] for k in a.files if k.endswith(".keep")):
        keep = a[f"{key}.keep"] != b[f"{key}.keep"]
        rule = a[f"{key}.rule"] != b[f"{key}.rule"]
        va, vb = a[f"{key}.value"], b[f"{key}.value"]
        value = ~(np.isclose(va, vb, rtol=1e-12, atol=0) | (np.isnan(va) & np.isnan(vb)))
        differ = keep | rule | value
        print(f"{key}: {len(differ):,} documents, {int(differ.sum())} differ "
              f"(keep {int(keep.sum())}, rule {int(rule.sum())}, value {int(value.sum())})")
        for i in np.flatnonzero(differ)[:5].tolist():
            print(f"    document {i}: {a[f'{key}.rule'][i]!r} {va[i]} -> {b[f'{key}.rule'][i]!r} {vb[i]}")
        total += int(differ.sum())
    print(f"{total} documents differ")
    return 1 if total else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("save").add_argument("out", type=Path)
    both = commands.add_parser("compare")
    both.add_argument("old", type=Path)
    both.add_argument("new", type=Path)
    args = parser.parse_args()
    if args.command == "save":
        save(args.out)
    else:
        sys.exit(compare(args.old, args.new))


if __name__ == "__main__":
    main()
