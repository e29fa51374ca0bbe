"""The embedded, offline demo: typed shards built from text every Python install has.

The text comes from the running interpreter's standard library (``demo_text``: reference docs as ``main``,
``.py`` sources as ``code``, docstrings and licences as ``web``). `build_demo` trains a small byte-level BPE
on the training documents and writes the shards ``data/{train,val}/main/1``, ``data/{train,val}/c1`` and
``data/{train,val}/w1`` with `prepare_shard`. No network is used anywhere.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from sharded_mix.shards import shard_from_index
from sharded_mix.streaming.discovery import read_index
from sharded_mix.tools.demo_text import (
    KINDS,
    Document,
    cap_documents,
    collect_code,
    collect_docstrings,
    collect_documents,
    collect_licences,
    split_train_val,
    walk_stdlib,
)
from sharded_mix.tools.prepare import PrepareSummary, load_tokenizer, prepare_shard

__all__ = [
    "EOS_TOKEN",
    "KINDS",
    "MIN_CHUNK_TOKENS",
    "DemoResult",
    "DemoShard",
    "Document",
    "build_demo",
    "cap_documents",
    "collect_code",
    "collect_docstrings",
    "collect_documents",
    "collect_licences",
    "split_train_val",
    "train_tokenizer",
    "walk_stdlib",
    "write_jsonl",
    "write_tokenizer_config",
]

logger = logging.getLogger(__name__)

SHARD_IDS = {"main": "main/1", "code": "c1", "web": "w1"}
SPLITS = ("train", "val")
EOS_TOKEN = "<|endoftext|>"
TRAIN_CHUNKS = 4  # target chunks per train shard
MIN_CHUNK_TOKENS = 16 * 65  # every chunk holds at least 16 blocks of 65 tokens
DEMO_FORMAT = 1


@dataclass(frozen=True)
class DemoShard:
    """One written shard of the demo."""

    split: str
    kind: str
    shard_id: str
    path: Path
    documents: int
    tokens: int
    chunks: int

    @property
    def name(self) -> str:
        return f"{self.split}/{self.shard_id}"


@dataclass(frozen=True)
class DemoResult:
    """Where the demo lives and what it holds."""

    workdir: Path
    tokenizer_dir: Path
    data_dir: Path
    vocab_size: int
    shards: tuple[DemoShard, ...]
    reused: bool
    seconds: float

    @property
    def train_dir(self) -> Path:
        return self.data_dir / "train"

    @property
    def val_dir(self) -> Path:
        return self.data_dir / "val"

    def token_counts(self) -> dict[str, int]:
        """Tokens per shard, keyed 'train/main/1', 'val/c1', ..."""
        return {shard.name: shard.tokens for shard in self.shards}

    def describe(self) -> str:
        """A multi-line human summary."""
        how = "reused the existing build" if self.reused else f"built in {self.seconds:.1f}s"
        lines = [
            f"demo data in {self.workdir} ({how})",
            f"  tokenizer: {self.tokenizer_dir} (byte-level BPE, vocab {self.vocab_size}, eos {EOS_TOKEN})",
        ]
        for shard in self.shards:
            lines.append(
                f"  {shard.name:<14} {shard.kind:<5} {shard.documents:>6,} docs {shard.tokens:>10,} tokens "
                f"{shard.chunks:>3} chunk(s)"
            )
        lines.append(f"  train shards: {self.train_dir}   val shards: {self.val_dir}")
        return "\n".join(lines)


# ----------------------------------------------------------------------------- tokenizer


def train_tokenizer(texts: Iterable[str], vocab_size: int, out_dir: Path) -> Path:
    """Train a byte-level BPE with an `<|endoftext|>` EOS and save it where litgpt's Tokenizer loads it."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    if vocab_size < 257 + 1:
        raise ValueError(f"--vocab-size {vocab_size} is too small; byte-level BPE needs at least 258 (try 4096)")
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(out_dir / "tokenizer.json"))
    write_tokenizer_config(out_dir)
    return out_dir


def write_tokenizer_config(out_dir: Path, model_max_length: int = 2048) -> None:
    """The tokenizer_config.json litgpt reads (it needs `tokenizer_class`; EOS, no BOS)."""
    config = {
        "add_bos_token": False,
        "eos_token": EOS_TOKEN,
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": model_max_length,
    }
    (out_dir / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")


# ----------------------------------------------------------------------------- building the demo


def _staging_path(text_dir: Path, kind: str, split: str) -> Path:
    return text_dir / kind / f"{split}.jsonl"


def _shard_path(data_dir: Path, kind: str, split: str) -> Path:
    return data_dir / split / SHARD_IDS[kind]


def write_jsonl(docs: Sequence[Document], path: Path) -> None:
    """Write `docs` as jsonl, longest document last (so the final chunk of a shard is never a sliver)."""
    ordered = list(docs)
    if ordered:
        longest = max(range(len(ordered)), key=lambda i: (len(ordered[i].text), ordered[i].source))
        ordered.append(ordered.pop(longest))
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as out:
        for doc in ordered:
            out.write(json.dumps({"text": doc.text, "source": doc.source}, ensure_ascii=False) + "\n")


def _chunk_bytes_for(train_chars: int) -> int:
    """Chunk size giving about TRAIN_CHUNKS chunks per train shard (~3 characters a token, 2 bytes a token)."""
    return max(64_000, train_chars * 2 // 3 // TRAIN_CHUNKS)


def _prepare(staging: Path, tokenizer_dir: Path, output: Path, chunk_bytes: int, overwrite: bool) -> PrepareSummary:
    """`prepare_shard`, retried with bigger chunks until every chunk holds MIN_CHUNK_TOKENS tokens."""
    for attempt in range(4):
        replace = overwrite or attempt > 0
        summary = prepare_shard(
            [staging], tokenizer_dir, output, chunk_bytes=chunk_bytes, overwrite=replace, progress=False
        )
        smallest = min(int(chunk["dim"]) for chunk in read_index(output)["chunks"])
        if smallest >= MIN_CHUNK_TOKENS or summary.chunks == 1:
            return summary
        logger.info("%s: a chunk holds only %d tokens; retrying with bigger chunks", output, smallest)
        chunk_bytes *= 2
    logger.warning("%s: a chunk holds only %d tokens (fewer than %d)", output, smallest, MIN_CHUNK_TOKENS)
    return summary


def _summary_shard(data_dir: Path, kind: str, split: str) -> DemoShard:
    path = _shard_path(data_dir, kind, split)
    shard = shard_from_index(SHARD_IDS[kind], kind, path, read_index(path))
    return DemoShard(split, kind, shard.id, path, shard.documents, shard.tokens, shard.chunks)


def _marker_path(workdir: Path) -> Path:
    return workdir / "demo.json"


def _existing_build(workdir: Path, vocab_size: int) -> bool:
    """True when a complete demo with this vocab size is already in `workdir`."""
    marker = _marker_path(workdir)
    if not marker.is_file():
        return False
    meta = json.loads(marker.read_text(encoding="utf-8"))
    if meta.get("vocab_size") != vocab_size or meta.get("format") != DEMO_FORMAT:
        raise FileExistsError(
            f"{workdir} holds a demo built with --vocab-size {meta.get('vocab_size')}, not {vocab_size}; "
            "pass --overwrite to rebuild it or pick another --workdir"
        )
    data_dir = workdir / "data"
    shards_ok = all((_shard_path(data_dir, k, s) / "index.json").is_file() for k in KINDS for s in SPLITS)
    return shards_ok and (workdir / "tokenizer" / "tokenizer.json").is_file()


def _check_free(workdir: Path) -> None:
    """Refuse to replace outputs of an unfinished or foreign build without --overwrite."""
    taken = [workdir / "tokenizer" / "tokenizer.json"] + [
        _shard_path(workdir / "data", kind, split) for kind in KINDS for split in SPLITS
    ]
    existing = [path for path in taken if path.exists() and (path.is_file() or any(path.iterdir()))]
    if existing:
        raise FileExistsError(
            f"{workdir} holds an unfinished or foreign demo build ({existing[0]} exists); "
            "pass --overwrite to rebuild it or pick another --workdir"
        )


def _result(workdir: Path, vocab_size: int, reused: bool, seconds: float) -> DemoResult:
    data_dir = workdir / "data"
    shards = tuple(_summary_shard(data_dir, kind, split) for split in SPLITS for kind in KINDS)
    return DemoResult(workdir, workdir / "tokenizer", data_dir, vocab_size, shards, reused, seconds)


def build_demo(workdir: Path, vocab_size: int = 4096, overwrite: bool = False) -> DemoResult:
    """Build (or reuse) the demo tokenizer and the six typed shards under `workdir`."""
    start = time.perf_counter()
    workdir = Path(workdir)
    if not overwrite and _existing_build(workdir, vocab_size):
        logger.info("reusing the demo in %s (pass --overwrite to rebuild)", workdir)
        return _result(workdir, vocab_size, reused=True, seconds=time.perf_counter() - start)
    if not overwrite:
        _check_free(workdir)
    _marker_path(workdir).unlink(missing_ok=True)

    logger.info("collecting documents from the Python %d.%d stdlib", *sys.version_info[:2])
    splits = {kind: split_train_val(docs) for kind, docs in collect_documents().items()}
    tokenizer_dir = workdir / "tokenizer"
    logger.info("training a byte-level BPE tokenizer (vocab %d)", vocab_size)
    train_tokenizer((doc.text for kind in KINDS for doc in splits[kind][0]), vocab_size, tokenizer_dir)
    load_tokenizer(tokenizer_dir)  # litgpt must load it, with an EOS id

    text_dir, data_dir = workdir / "text", workdir / "data"
    for kind in KINDS:
        train, val = splits[kind]
        chunk_bytes = _chunk_bytes_for(sum(len(doc.text) for doc in train))
        for split, docs in zip(SPLITS, (train, val)):
            staging = _staging_path(text_dir, kind, split)
            write_jsonl(docs, staging)
            _prepare(staging, tokenizer_dir, _shard_path(data_dir, kind, split), chunk_bytes, overwrite)

    result = _result(workdir, vocab_size, reused=False, seconds=time.perf_counter() - start)
    meta = {
        "format": DEMO_FORMAT,
        "vocab_size": vocab_size,
        "python": sys.version.split()[0],
        "tokens": result.token_counts(),
    }
    _marker_path(workdir).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return result
