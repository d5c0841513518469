"""Train a byte-level BPE tokenizer on the same inputs `prep run` reads.

Texts come from the project's Source (so every input format and the bad-record
handling are the same as in a run) and are streamed chunk by chunk into the
`tokenizers` trainer, so the corpus never has to fit in memory.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Annotated, TextIO

import typer

from prep.errors import UserError
from prep.io.sources import InputFile, expand_inputs, iter_chunks

END_OF_TEXT = "<|endoftext|>"
SPECIAL_TOKENS = [END_OF_TEXT]
MIN_VOCAB_SIZE = 256 + len(SPECIAL_TOKENS)  # the byte alphabet plus the special tokens
CHUNK_BYTES = 1 << 20


def _open_output(output: Path) -> tuple[TextIO, Path]:
    """Open the temporary file next to `output` now, so an unwritable output fails before training."""
    if output.is_dir():
        raise UserError(f"--output {output} is a directory; name a file, e.g. {output / 'tokenizer.json'}")
    temp = output.with_name(f".{output.name}.tmp")
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        return open(temp, "w", encoding="utf-8"), temp  # noqa: SIM115 - closed by train_tokenizer
    except (FileExistsError, NotADirectoryError):
        raise UserError(f"cannot write --output {output}: part of its folder path is a file") from None
    except OSError as exc:
        raise UserError(f"cannot write --output {output}: {exc.strerror or exc}") from None


def _texts(files: Sequence[InputFile], text_field: str, counter: list[int]) -> Iterator[list[str]]:
    """Yield the texts chunk by chunk (a list per chunk), counting documents into counter[0]."""
    for chunk in iter_chunks(files, text_field=text_field, id_field="id", chunk_bytes=CHUNK_BYTES):
        counter[0] += chunk.batch.num_rows
        yield chunk.batch.column("text").to_pylist()


def train_tokenizer(
    inputs: Sequence[str],
    vocab_size: int,
    output: str | Path,
    *,
    text_field: str = "text",
    min_frequency: int = 2,
) -> dict:
    """Train a GPT-2-style byte-level BPE on `inputs` and save it to `output` (tokenizer.json).

    Byte-level means every string round-trips, whatever its script, so the tokenizer
    can be used by `prep run` on any corpus. The file is written atomically (temp
    file + rename), and training is deterministic: the same inputs give the same bytes.
    Returns {"documents", "vocab_size", "seconds"}; vocab_size is the size reached,
    which is smaller than asked when the corpus has too few distinct pairs.
    """
    from prep.text.hf import tokenizers_major

    if tokenizers_major() >= 1:
        raise UserError(f"train-tokenizer needs the tokenizers 0.2x API (trainers); tokenizers {tokenizers_major()}.x "
                        "has none: run it where prep is installed without [fast]")
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    if vocab_size < MIN_VOCAB_SIZE:
        raise UserError(
            f"--vocab-size {vocab_size} is too small: a byte-level BPE needs at least {MIN_VOCAB_SIZE} "
            f"(256 bytes + {len(SPECIAL_TOKENS)} special token)"
        )
    if min_frequency < 1:
        raise UserError(f"min_frequency must be at least 1, not {min_frequency}")
    output = Path(output)
    files = expand_inputs(list(inputs))
    if not files:
        raise UserError("no --input given")

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )

    handle, temp = _open_output(output)
    try:
        start = time.perf_counter()
        documents = [0]
        tokenizer.train_from_iterator(_texts(files, text_field, documents), trainer=trainer)
        seconds = time.perf_counter() - start
        if documents[0] == 0:
            raise UserError(f"no documents to train on in {', '.join(map(str, inputs))}")
        handle.write(tokenizer.to_str(pretty=True))
        handle.flush()
        os.fsync(handle.fileno())
        handle.close()
        os.replace(temp, output)
    finally:
        handle.close()
        temp.unlink(missing_ok=True)
    return {"documents": documents[0], "vocab_size": tokenizer.get_vocab_size(), "seconds": seconds}


def train_tokenizer_command(
    input: Annotated[list[str], typer.Option("--input", help="Input file, folder or glob; repeat for more.")],
    vocab_size: Annotated[int, typer.Option("--vocab-size", help="Vocabulary size, specials included.")],
    output: Annotated[Path, typer.Option("--output", help="Where to write tokenizer.json.")],
    text_field: Annotated[str, typer.Option("--text-field", help="The field that holds the text.")] = "text",
) -> None:
    """Train a byte-level BPE tokenizer (tokenizer.json) on the input files."""
    summary = train_tokenizer(input, vocab_size, output, text_field=text_field)
    reached = summary["vocab_size"]
    short = "" if reached == vocab_size else f" (asked for {vocab_size}; too few distinct pairs)"
    typer.echo(
        f"trained byte-level BPE: {reached} tokens{short} from {summary['documents']} documents "
        f"in {summary['seconds']:.1f} s -> {output}"
    )
