"""The tokenizer side of `sharded-mix prepare`: loading litgpt's tokenizer, the token dtype, what workers need.

``load_tokenizer`` checks that a directory holds a tokenizer litgpt loads, with an EOS token; the vocabulary size
(added tokens included) picks uint16 or int32 tokens; ``tokenizer_spec`` is what a worker process needs to
tokenize the same way, and ``tokenizer_record`` what ``manifest.json`` says about the tokenizer.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch

from sharded_mix.streaming.encoding import UINT16_VOCAB_LIMIT, TokenizerSpec
from sharded_mix.streaming.identity import vocab_fingerprint, vocab_size_with_added


def load_tokenizer(tokenizer_dir: Path) -> Any:
    """litgpt's Tokenizer for `tokenizer_dir`; raises ValueError when it is missing or has no EOS token."""
    from litgpt.tokenizer import Tokenizer

    tokenizer_dir = Path(tokenizer_dir)
    if not tokenizer_dir.is_dir():
        raise ValueError(f"--tokenizer-dir {str(tokenizer_dir)!r} is not a directory; pass a litgpt checkpoint dir")
    try:
        tokenizer = Tokenizer(tokenizer_dir)
    except NotImplementedError as err:
        raise ValueError(
            f"--tokenizer-dir {str(tokenizer_dir)!r} holds neither tokenizer.json nor tokenizer.model; "
            "pass a directory with one of them"
        ) from err
    if tokenizer.eos_id is None:
        raise ValueError(
            f"the tokenizer in {tokenizer_dir} has no EOS token; set 'eos_token' in its tokenizer_config.json "
            "(or 'eos_token_id' in generation_config.json)"
        )
    return tokenizer


def token_dtype(vocab_size: int) -> torch.dtype:
    """uint16 when every id fits in 16 bits, else int32."""
    return torch.uint16 if vocab_size <= UINT16_VOCAB_LIMIT else torch.int32


def tokenizer_spec(tokenizer: Any, tokenizer_dir: Path, dtype: torch.dtype) -> TokenizerSpec:
    """What worker processes need to tokenize like ``tokenizer.encode(text, eos=True)``."""
    name = "tokenizer.json" if tokenizer.backend == "huggingface" else "tokenizer.model"
    return TokenizerSpec(
        tokenizer.backend,
        str((Path(tokenizer_dir) / name).resolve()),
        int(tokenizer.eos_id),
        None if tokenizer.bos_id is None else int(tokenizer.bos_id),
        bool(tokenizer.use_bos),
        str(dtype).removeprefix("torch."),
    )


def tokenizer_record(tokenizer: Any, tokenizer_dir: Path) -> dict[str, Any]:
    """The manifest's ``tokenizer`` entry: where it lives, a hash of its vocabulary file, its sizes and ids."""
    name = "tokenizer.json" if tokenizer.backend == "huggingface" else "tokenizer.model"
    return {
        "name": tokenizer_dir.resolve().name,
        "dir": str(tokenizer_dir.resolve()),
        "backend": tokenizer.backend,
        "vocab_file": name,
        "vocab_sha256": hashlib.sha256((tokenizer_dir / name).read_bytes()).hexdigest(),
        "vocab_fingerprint": vocab_fingerprint(tokenizer),
        "vocab_size": vocab_size_with_added(tokenizer),
        "eos_id": tokenizer.eos_id,
        "bos_id": tokenizer.bos_id,
        "use_bos": bool(tokenizer.use_bos),
    }
