"""Tests for prep.tools.train_tokenizer and the sample corpus it is trained on."""

from __future__ import annotations

import csv
import gzip
import importlib.util
import io
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import typer
from tokenizers import Tokenizer, pre_tokenizers
from typer.testing import CliRunner

from prep.errors import UserError
from prep.tools.train_tokenizer import END_OF_TEXT, MIN_VOCAB_SIZE, train_tokenizer, train_tokenizer_command

SAMPLE = Path(__file__).resolve().parent.parent / "sample_data"

TRAIN_TEXTS = [
    "The quick brown fox jumps over the lazy dog. The dog sleeps in the sun.",
    "今天天气很好，我们一起去公园散步吧。公园里有很多人在跑步。",
    "def add(a, b):\n    return a + b\n\nprint(add(2, 3))\n",
    "Great post!!! 👍🎉 see https://example.com/a?b=c&d=e\r\n\tthanks",
]
# Round-trip cases, several of them unseen in training: other scripts, control characters, odd spaces.
ROUND_TRIP = [
    *TRAIN_TEXTS,
    "Sphinx of black quartz, judge my vow.",
    "我喜欢用中文写代码注释：这个函数返回两个数的和。",
    "emoji: 👩‍👩‍👧‍👦 🇨🇭 ❤️ 🙂",
    "int main(void) {\n\tprintf(\"%d\\n\", 42);\n\treturn 0;\n}\n",
    "  leading and trailing spaces  \r\n\x00\x1b[0m  zero\u200bwidth Привет مرحبا",
    "",
]


def _write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


@pytest.fixture
def tiny_corpus(tmp_path: Path) -> Path:
    """Ten copies of each training text: 40 documents, enough for a few hundred merges."""
    records = [{"id": f"d{i}", "text": TRAIN_TEXTS[i % 4]} for i in range(40)]
    return _write_jsonl(tmp_path / "tiny.jsonl", records)


def test_trained_tokenizer_has_requested_size_and_round_trips(tiny_corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "tok" / "tokenizer.json"
    summary = train_tokenizer([str(tiny_corpus)], 300, out)
    assert summary["documents"] == 40
    assert summary["vocab_size"] == 300
    assert summary["seconds"] >= 0

    tok = Tokenizer.from_file(str(out))
    assert tok.get_vocab_size() == 300
    vocab = tok.get_vocab()
    assert vocab[END_OF_TEXT] == 0
    assert set(pre_tokenizers.ByteLevel.alphabet()) <= set(vocab)  # every byte is a token
    assert "Ġthe" in vocab and "Ġdog" in vocab  # frequent words (with their space) became tokens
    for text in ROUND_TRIP:
        assert tok.decode(tok.encode(text).ids) == text, text
    ids = tok.encode(f"one{END_OF_TEXT}two").ids
    assert 0 in ids and tok.decode(ids, skip_special_tokens=False) == f"one{END_OF_TEXT}two"
    assert not list(tmp_path.glob("tok/.*.tmp"))  # the temporary file was renamed away


def test_training_is_deterministic(tiny_corpus: Path, tmp_path: Path) -> None:
    first, second = tmp_path / "a.json", tmp_path / "b.json"
    train_tokenizer([str(tiny_corpus)], 320, first)
    train_tokenizer([str(tiny_corpus)], 320, second)
    assert first.read_bytes() == second.read_bytes()


def test_text_field_and_smallest_vocab(tmp_path: Path) -> None:
    records = [{"id": str(i), "body": text} for i, text in enumerate(TRAIN_TEXTS)]
    corpus = _write_jsonl(tmp_path / "body.jsonl", records)
    out = tmp_path / "t.json"
    summary = train_tokenizer([str(corpus)], MIN_VOCAB_SIZE, out, text_field="body")
    assert summary == {"documents": 4, "vocab_size": 257, "seconds": summary["seconds"]}
    tok = Tokenizer.from_file(str(out))
    assert tok.encode("ab").tokens == ["a", "b"]  # no merges: bytes only
    assert tok.decode(tok.encode(TRAIN_TEXTS[1]).ids) == TRAIN_TEXTS[1]


def test_exhausted_merges_make_every_seen_word_one_token(tiny_corpus: Path, tmp_path: Path) -> None:
    """Asked for more than the corpus holds, training stops when no pair occurs twice: then every
    pre-token of the training texts (all seen ten times) is a single token, as ByteLevel splits it."""
    summary = train_tokenizer([str(tiny_corpus)], 50_000, tmp_path / "t.json")
    tok = Tokenizer.from_file(str(tmp_path / "t.json"))
    assert MIN_VOCAB_SIZE < summary["vocab_size"] == tok.get_vocab_size() < 50_000
    split = pre_tokenizers.ByteLevel(add_prefix_space=False)
    for text in TRAIN_TEXTS:
        assert tok.encode(text).tokens == [piece for piece, _ in split.pre_tokenize_str(text)]
    [(word, _)] = split.pre_tokenize_str("今天天气很好")
    assert tok.encode("今天天气很好").tokens == [word]  # six characters, eighteen bytes, one token
    assert len(tok.encode("Sphinx").tokens) > 1  # never seen: several pieces


@pytest.mark.parametrize("vocab_size", [0, 100, 256])
def test_too_small_vocab_is_a_user_error(tiny_corpus: Path, tmp_path: Path, vocab_size: int) -> None:
    with pytest.raises(UserError, match=rf"--vocab-size {vocab_size} is too small.*at least 257") as info:
        train_tokenizer([str(tiny_corpus)], vocab_size, tmp_path / "t.json")
    assert "\n" not in str(info.value)
    assert not (tmp_path / "t.json").exists()


def test_unwritable_output_is_a_user_error(tiny_corpus: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(UserError, match="cannot write --output .*part of its folder path is a file") as info:
        train_tokenizer([str(tiny_corpus)], 300, blocker / "tokenizer.json")
    with pytest.raises(UserError, match="part of its folder path is a file"):
        train_tokenizer([str(tiny_corpus)], 300, blocker / "deeper" / "tokenizer.json")
    assert "\n" not in str(info.value)
    with pytest.raises(UserError, match="is a directory"):
        train_tokenizer([str(tiny_corpus)], 300, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "tiny.jsonl"]


def test_only_bad_records_is_a_user_error(tmp_path: Path) -> None:
    corpus = tmp_path / "bad.jsonl"
    corpus.write_bytes(b'{"id": "a", "text": 1}\n{"id": "b", "text": null}\n{"id": "c", "te\n')
    with pytest.raises(UserError, match="no documents to train on"):
        train_tokenizer([str(corpus)], 300, tmp_path / "t.json")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.jsonl"]  # no output, no temporary file


def test_command_prints_one_line_and_raises_user_errors(tiny_corpus: Path, tmp_path: Path) -> None:
    app = typer.Typer()
    app.command("train-tokenizer")(train_tokenizer_command)
    app.command("other")(lambda: None)  # two commands, so the name is part of the command line
    out = tmp_path / "t.json"
    result = CliRunner().invoke(
        app, ["train-tokenizer", "--input", str(tiny_corpus), "--vocab-size", "300", "--output", str(out)]
    )
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("trained byte-level BPE: 300 tokens from 40 documents in ")
    assert lines[0].endswith(f" -> {out}")
    assert Tokenizer.from_file(str(out)).get_vocab_size() == 300

    result = CliRunner().invoke(
        app, ["train-tokenizer", "--input", str(tiny_corpus), "--vocab-size", "10", "--output", str(out)]
    )
    assert isinstance(result.exception, UserError)


# ------------------------------------------------------------------ the committed sample data


def test_sample_tokenizer_loads_and_round_trips() -> None:
    tok = Tokenizer.from_file(str(SAMPLE / "tokenizer.json"))
    assert tok.get_vocab_size() == 4096
    assert tok.token_to_id(END_OF_TEXT) == 0
    for text in ROUND_TRIP:
        assert tok.decode(tok.encode(text).ids) == text, text
    english = "Restoring one random file every month is a small ritual that catches large problems."
    chinese = "周末早上，我喜欢慢慢地煮一锅小米粥，再配一碟咸菜。"
    # Trained on this corpus: its words are whole tokens (with their leading space), common Chinese
    # words are one token each, and rare characters fall back to byte pieces that still decode.
    tokens = tok.encode(english).tokens
    assert len(tokens) <= len(english.split()) + 2  # words, plus at most a split first word and the "."
    assert {"Ġfile", "Ġmonth", "Ġritual", "Ġproblems"} <= set(tokens)
    for word in ["周末", "早上", "喜欢", "今天", "我们"]:
        assert len(tok.encode(word).ids) == 1, word
    assert len(tok.encode(chinese).ids) < len(chinese.encode()) / 2


def _load_make_sample():
    spec = importlib.util.spec_from_file_location("make_sample", SAMPLE / "make_sample.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_make_sample_reproduces_the_committed_corpus(tmp_path: Path) -> None:
    _load_make_sample().write_all(tmp_path)
    committed = SAMPLE / "corpus"
    names = sorted(str(p.relative_to(committed)) for p in committed.rglob("*") if p.is_file())
    assert names == sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    for name in names:
        if name.endswith(".parquet"):  # the footer names the pyarrow version; compare contents
            assert pq.read_table(tmp_path / name).equals(pq.read_table(committed / name))
        else:
            assert (tmp_path / name).read_bytes() == (committed / name).read_bytes(), name


def _strict_text(raw: bytes) -> str:
    """The text of one JSON line, or an exception for a bad record (independent of prep.io.sources)."""
    text = json.loads(raw.decode("utf-8"))["text"]
    if not isinstance(text, str):
        raise TypeError(type(text).__name__)
    text.encode("utf-8")  # a lone surrogate fails here
    return text


def test_sample_corpus_bad_records_are_where_the_readme_says() -> None:
    corpus = SAMPLE / "corpus"
    bad_lines = []
    for number, raw in enumerate((corpus / "en.jsonl").read_bytes().splitlines(), start=1):
        try:
            _strict_text(raw)
        except (ValueError, KeyError, TypeError):
            bad_lines.append(number)
    assert bad_lines == [11, 27, 43, 59, 75, 91]
    assert len((corpus / "en.jsonl").read_bytes().splitlines()) == 310
    assert len(gzip.decompress((corpus / "zh.jsonl.gz").read_bytes()).splitlines()) == 200
    assert pq.read_table(corpus / "code.parquet").num_rows == 150

    raw = (corpus / "web.csv").read_bytes()
    rows = list(csv.reader(io.StringIO(raw.decode("utf-8", "surrogateescape"), newline="")))[1:]
    assert len(rows) == 155
    odd = [(n, row[0]) for n, row in enumerate(rows, start=1) if len(row) != 4 or "\udc93" in row[1]]
    assert odd == [(15, "web-bad-extra-field"), (32, "web-bad-short-row"), (64, "web-bad-utf8")]
    blank = [row[0] for row in rows if len(row) == 4 and not row[1].strip()]
    assert blank == ["web-empty", "web-blank"]
    assert len(list((corpus / "notes").glob("*.txt"))) == 5
