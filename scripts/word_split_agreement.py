"""Why the rules cut English words as spaCy does, and not at whitespace as the features do: datatrove's own
filters, run once with their words (spaCy's blank English tokenizer) and once with `str.split()` words, on the
documents of the slow agreement test (every third of the English files of ../shared/corpus). The share of
documents on which the two runs decide alike is the most a rule set sharing the features' whitespace words
could agree with datatrove (issue 14 asks for 98 %).

    .venv/bin/python scripts/word_split_agreement.py [STEP]      # datatrove and spaCy: `make .venv/.installed-test`

Round 11, 11,426 documents: gopher_quality 77.07 %, gopher_repetition 91.66 %, c4 100.00 % (it splits no
words), fineweb 92.98 %.
"""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path

import numpy as np
from datatrove.data import Document
from datatrove.pipeline import filters
from datatrove.utils import word_tokenizers

CORPUS = Path(__file__).resolve().parent.parent.parent / "shared" / "corpus"
FILTERS = {"gopher_quality": filters.GopherQualityFilter, "gopher_repetition": filters.GopherRepetitionFilter,
           "c4": filters.C4QualityFilter, "fineweb": filters.FineWebQualityFilter}


def english_docs(step: int) -> list[str]:
    """Every `step`-th non-blank document of every English file (the slow agreement test's documents too)."""
    texts = []
    for path in sorted(CORPUS.glob("en_*.jsonl.gz")):
        with gzip.open(path, "rt", encoding="utf-8") as f:
            texts += [json.loads(line)["text"] for i, line in enumerate(f) if i % step == 0]
    return [t for t in texts if t.strip()]


def decisions(texts: list[str], names: tuple[str, ...] = tuple(FILTERS)) -> dict[str, np.ndarray]:
    """Per rule set, which texts datatrove's own filter keeps."""
    decided = {}
    for name in names:
        keeps = FILTERS[name]().filter
        decided[name] = np.array([keeps(Document(text=t, id=str(i))) is True for i, t in enumerate(texts)])
    return decided


def main() -> None:
    texts = english_docs(int(sys.argv[1]) if len(sys.argv) > 1 else 3)
    spacy_words = decisions(texts)
    word_tokenizers.SpaCyTokenizer.word_tokenize = lambda self, text: text.split()
    whitespace_words = decisions(texts)
    print(f"{len(texts):,} documents; keep/drop alike with str.split() words as with spaCy's:")
    for name in FILTERS:
        print(f"  {name}: {100 * float((spacy_words[name] == whitespace_words[name]).mean()):.2f} %")


if __name__ == "__main__":
    main()
