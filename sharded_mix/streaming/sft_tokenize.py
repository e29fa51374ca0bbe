"""SFT task records → token arrays, as LitGPT's ``SFTDataset`` tokenizes them, in worker processes.

Per record: the prompt (the prompt style applied to it; BOS as the tokenizer's ``use_bos`` says, no EOS), then the
response (``output``; no BOS, EOS), one after the other; the prompt's length; and LitGPT's raw count: the tokens of
``instruction`` alone plus the response's. Prompts are formatted here (prompt styles need not pickle) and sent in
chunks (about ``CHUNKS_PER_PROCESS`` per process, so that none is left working alone at the end, and at most
``CHUNK_EXAMPLES`` records); the chunks come back in order. On Linux the workers are forked, as
DataLoader workers are (a spawned process would import the launching script again: all of LitGPT, seconds per
worker); elsewhere spawned. They use numpy and the tokenizer only.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

import numpy as np

from sharded_mix.streaming.encoding import TokenizerSpec, encoder_for

CHUNK_EXAMPLES = 4096
CHUNKS_PER_PROCESS = 4
PROCESS_EXAMPLES = 1024
"""A process for every this many records at most: a small file is tokenized here."""


@dataclass(frozen=True)
class EncodedChunk:
    """Consecutive examples: their tokens one after the other, and per example (int64) its length, its prompt's
    length and its raw count."""

    tokens: np.ndarray
    lengths: np.ndarray
    prompt_lengths: np.ndarray
    raw_counts: np.ndarray


def encode_examples(
    spec: TokenizerSpec, prompts: list[str], responses: list[str], instructions: list[str]
) -> EncodedChunk:
    """One chunk's examples, as ``SFTDataset.__getitem__`` encodes each (no length limit)."""
    encoder = encoder_for(spec)
    texts: list[str] = [""] * (2 * len(prompts))
    texts[0::2], texts[1::2] = prompts, responses
    prompt_or_response = np.tile(np.array([True, False]), len(prompts))
    bos = prompt_or_response & spec.use_bos  # the prompt: the tokenizer's default; the response: none
    tokens, counts = encoder.encode_flat(texts, bos, ~prompt_or_response)
    _, instruction_counts = encoder.encode_flat(instructions, None, False)
    prompt_lengths, response_lengths = counts[0::2], counts[1::2]
    return EncodedChunk(
        tokens, prompt_lengths + response_lengths, prompt_lengths, instruction_counts + response_lengths
    )


def chunk_texts(
    records: Sequence[dict], prompt_style: Any, size: int
) -> Iterator[tuple[list[str], list[str], list[str]]]:
    """The (prompts, responses, instructions) of each chunk of ``size`` records."""
    for start in range(0, len(records), size):
        part = records[start : start + size]
        yield (
            [prompt_style.apply(prompt=record["instruction"], **record) for record in part],
            [record["output"] for record in part],
            [record["instruction"] for record in part],
        )


def processes(examples: int, workers: int) -> int:
    """How many processes encode ``examples`` records with ``workers`` at most."""
    return max(1, min(workers, examples // PROCESS_EXAMPLES))


def encode_records(
    records: Sequence[dict],
    prompt_style: Any,
    spec: TokenizerSpec,
    workers: int,
    write: Callable[[EncodedChunk], None],
    progress: Callable[[int], None] = lambda examples: None,
) -> None:
    """``write`` each chunk of ``records``, encoded, in order; ``workers`` processes at most (``processes``; this one
    when 1). ``progress``: examples encoded, as chunks finish."""
    workers = processes(len(records), workers)
    size = max(1, min(CHUNK_EXAMPLES, -(-len(records) // (CHUNKS_PER_PROCESS * workers))))
    chunks = chunk_texts(records, prompt_style, size)
    if workers == 1:
        for texts in chunks:
            write(encode_examples(spec, *texts))
            progress(len(texts[0]))
        return
    context = multiprocessing.get_context("fork" if sys.platform == "linux" else "spawn")
    running: dict[Future, int] = {}
    done_chunks: dict[int, EncodedChunk] = {}
    submitted = written = 0
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker, initargs=(spec,)) as pool:
        try:
            while True:
                while len(running) < 2 * workers:
                    texts = next(chunks, None)
                    if texts is None:
                        break
                    running[pool.submit(_encode_in_worker, *texts)] = submitted
                    submitted += 1
                if not running:
                    break
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    chunk = future.result()
                    done_chunks[running.pop(future)] = chunk
                    progress(len(chunk.lengths))
                while written in done_chunks:
                    write(done_chunks.pop(written))
                    written += 1
        except BaseException:
            for future in running:
                future.cancel()
            raise


_SPEC: TokenizerSpec | None = None


def _init_worker(spec: TokenizerSpec) -> None:
    global _SPEC
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one process per core already
    _SPEC = spec
    encoder_for(spec)  # load the tokenizer before the first chunk arrives


def _encode_in_worker(prompts: list[str], responses: list[str], instructions: list[str]) -> EncodedChunk:
    assert _SPEC is not None
    return encode_examples(_SPEC, prompts, responses, instructions)
