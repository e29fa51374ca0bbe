"""Which tokenizer wrote a shard (from its ``manifest.json``), and whether the run's tokenizer and model can read it.

A shard tokenized with another vocabulary of the same size trains on garbage without a word, and ids at or past the
model's vocabulary are a device-side assert on a GPU. ``prepare`` records the tokenizer in each shard's manifest:
the sha256 of its vocabulary file, a fingerprint of its token → id map (comparable from a loaded tokenizer alone),
and its vocabulary size; ``check_tokenizer`` compares them with the run's before the first step.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sharded_mix.shards import TokenizerIdentity

MANIFEST_FILE = "manifest.json"


def parse_manifest(content: bytes) -> TokenizerIdentity | None:
    """The tokenizer identity in a ``manifest.json``'s bytes; None for none (or an unreadable manifest)."""
    try:
        return TokenizerIdentity.from_manifest(json.loads(content))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None


def vocab_fingerprint(tokenizer: Any) -> str:
    """A sha256 of a litgpt ``Tokenizer``'s token → id map (added tokens included), EOS and BOS ids."""
    if tokenizer.backend == "huggingface":
        vocab = sorted(tokenizer.processor.get_vocab(with_added_tokens=True).items(), key=lambda item: item[1])
    else:
        vocab = [(tokenizer.processor.id_to_piece(i), i) for i in range(tokenizer.processor.vocab_size())]
    text = json.dumps({"vocab": vocab, "eos": tokenizer.eos_id, "bos": tokenizer.bos_id}, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class RunTokenizer:
    """What the run knows of its tokenizer and model (None: not known here)."""

    name: str
    fingerprint: str | None
    file_sha256: str | None
    model_vocab_size: int | None


def run_tokenizer(tokenizer: Any, tokenizer_dir: str | None, model_vocab_size: int | None) -> RunTokenizer | None:
    """What the run knows of its tokenizer (the litgpt ``Tokenizer`` it connected, the directory it came from) and
    model; None when it knows neither."""
    if tokenizer is None and tokenizer_dir is None and model_vocab_size is None:
        return None
    file_sha256 = None
    for name in ("tokenizer.json", "tokenizer.model"):
        path = Path(tokenizer_dir) / name if tokenizer_dir else None
        if path is not None and path.is_file():
            file_sha256 = hashlib.sha256(path.read_bytes()).hexdigest()
            break
    name = Path(tokenizer_dir).name if tokenizer_dir else getattr(tokenizer, "model_name", "?")
    fingerprint = vocab_fingerprint(tokenizer) if tokenizer is not None else None
    return RunTokenizer(name, fingerprint, file_sha256, model_vocab_size)


def token_limit(tokenizer: Any, model_vocab_size: int | None) -> int | None:
    """The bound token ids must stay below: the model's vocabulary, else the tokenizer's (added tokens included)."""
    if model_vocab_size:
        return model_vocab_size
    return None if tokenizer is None else vocab_size_with_added(tokenizer)


def vocab_size_with_added(tokenizer: Any) -> int:
    """Largest token id + 1 of a litgpt ``Tokenizer``, added/special tokens included."""
    if tokenizer.backend == "huggingface":
        vocab = tokenizer.processor.get_vocab(with_added_tokens=True)
        size = max(max(vocab.values(), default=-1) + 1, tokenizer.processor.get_vocab_size(with_added_tokens=True))
    else:
        size = tokenizer.processor.vocab_size()
    special = [i for i in (tokenizer.bos_id, tokenizer.eos_id) if i is not None]
    return max([size] + [i + 1 for i in special])


def check_tokenizer(shards: Sequence, run: RunTokenizer) -> str | None:
    """A ``ValueError`` for the first shard its manifest says was tokenized otherwise than ``run`` (or whose
    vocabulary exceeds the model's); the INFO line for shards it cannot check (None: every shard was checked)."""
    unchecked = []
    for shard in shards:
        identity: TokenizerIdentity | None = shard.tokenizer
        if identity is None:
            unchecked.append(shard.id)
            continue
        if identity.vocab_fingerprint and run.fingerprint:
            ours, theirs, what = run.fingerprint, identity.vocab_fingerprint, "token -> id map"
        elif identity.vocab_sha256 and run.file_sha256:
            ours, theirs, what = run.file_sha256, identity.vocab_sha256, "vocabulary file sha256"
        else:
            unchecked.append(shard.id)
            ours = theirs = what = None
        if ours != theirs:
            raise ValueError(
                f"source {shard.id!r} ({shard.path}) was tokenized with {identity.name!r} ({what} {theirs[:16]}…), "
                f"but this run's tokenizer {run.name!r} has {ours[:16]}…: it would train on other token ids. Use the "
                "tokenizer the shards were prepared with (the manifest's `tokenizer.dir`), or re-prepare the shard "
                "with this one."
            )
        if run.model_vocab_size and identity.vocab_size and identity.vocab_size > run.model_vocab_size:
            raise ValueError(
                f"source {shard.id!r} ({shard.path}) holds token ids up to {identity.vocab_size - 1:,} "
                f"(vocabulary {identity.vocab_size:,}), past the model's {run.model_vocab_size:,}: a device-side "
                "assert on a GPU. Use a model whose vocabulary covers the tokenizer's."
            )
    if not unchecked:
        return None
    return (
        f"tokenizer: {len(unchecked)} of {len(shards)} source(s) cannot be checked against the run's tokenizer "
        f"({', '.join(unchecked[:8])}{', ...' if len(unchecked) > 8 else ''}): no manifest.json with the tokenizer "
        "(shards not written by `sharded-mix prepare`); their token ids are range-checked as chunks are verified"
    )


def check_run_tokenizer(shards: Sequence, tokenizer: Any, context: Any) -> tuple[str | None, int | None]:
    """``check_tokenizer`` of ``shards`` against the connected ``tokenizer`` and a ``RunContext``'s tokenizer
    directory and model; returns its INFO line (or None) and the token id bound for the verification pass."""
    run = run_tokenizer(tokenizer, context.tokenizer_dir, context.model_vocab_size)
    note = check_tokenizer(shards, run) if run is not None else None
    return note, token_limit(tokenizer, context.model_vocab_size)
