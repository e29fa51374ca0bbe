"""The one tokenizer engine of ``sharded-mix prepare`` and the SFT token cache: litgpt's ``Tokenizer.encode`` over
batches of texts, in any process, as flat token arrays.

A ``TokenizerSpec`` is what a (spawned) process needs to load the tokenizer: its backend, its vocabulary file or
that file's content, the EOS / BOS ids and ``use_bos``. The ``Encoder`` tokenizes a batch at once (HF
``encode_batch_fast`` / ``encode_batch``, sentencepiece's list ``encode``) and then applies litgpt's BOS / EOS rules
to every text with numpy: ``bos`` (None: the tokenizer's ``use_bos``) adds a missing BOS, else a BOS the processor
put first is taken off; ``eos`` adds a missing EOS, and a last token that is EOS already is taken off, with ``eos``
too (litgpt's ``encode`` does that; ``keep_final_eos`` keeps it, as ``prepare`` does).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np

UINT16_VOCAB_LIMIT = 2**16


@dataclass(frozen=True)
class TokenizerSpec:
    """What a process needs to tokenize exactly like a litgpt ``Tokenizer``."""

    backend: str
    model_file: str
    eos_id: int
    bos_id: int | None
    use_bos: bool
    dtype: str
    model: bytes | None = None
    """The vocabulary file's content, for a tokenizer whose file is not known (then ``model_file`` is only a name)."""

    def load(self) -> Any:
        if self.backend == "huggingface":
            from tokenizers import Tokenizer

            if self.model is not None:
                return Tokenizer.from_str(self.model.decode("utf-8"))
            return Tokenizer.from_file(self.model_file)
        from sentencepiece import SentencePieceProcessor

        if self.model is not None:
            return SentencePieceProcessor(model_proto=self.model)
        return SentencePieceProcessor(model_file=self.model_file)


def serialized_model(tokenizer: Any) -> bytes:
    """A loaded litgpt ``Tokenizer``'s whole processor as bytes (HF ``tokenizer.json``, sentencepiece's model): what
    a process needs to load the same tokenizer, and what tells two tokenizers apart (vocabulary, merges,
    normalization, added tokens)."""
    if tokenizer.backend == "huggingface":
        return tokenizer.processor.to_str().encode("utf-8")
    return bytes(tokenizer.processor.serialized_model_proto())


def spec_of(tokenizer: Any, dtype: str, model: bytes | None = None) -> TokenizerSpec:
    """The spec of a loaded litgpt ``Tokenizer`` (``model``: its ``serialized_model``, computed when not given), for
    ``dtype`` tokens. A ``ValueError`` when it has no EOS token, or uses a BOS token it does not define."""
    if tokenizer.eos_id is None:
        raise ValueError(
            f"the tokenizer {getattr(tokenizer, 'model_name', '?')!r} has no EOS token, which ends every response; "
            "set 'eos_token' in its tokenizer_config.json (or 'eos_token_id' in generation_config.json)."
        )
    if tokenizer.use_bos and tokenizer.bos_id is None:
        raise ValueError(
            f"the tokenizer {getattr(tokenizer, 'model_name', '?')!r} adds a BOS token (add_bos_token) but defines "
            "none; set 'bos_token' in its tokenizer_config.json, or add_bos_token: false."
        )
    model = serialized_model(tokenizer) if model is None else model
    bos_id = None if tokenizer.bos_id is None else int(tokenizer.bos_id)
    return TokenizerSpec(tokenizer.backend, "", int(tokenizer.eos_id), bos_id, bool(tokenizer.use_bos), dtype, model)


def token_dtype_name(vocab_size: int) -> str:
    """``uint16`` when every id of a ``vocab_size`` vocabulary fits in 16 bits, else ``int32``."""
    return "uint16" if vocab_size <= UINT16_VOCAB_LIMIT else "int32"


class Encoder:
    """Batches of texts → tokens, as litgpt's ``Tokenizer.encode(text, bos=..., eos=...)`` gives them."""

    def __init__(self, spec: TokenizerSpec) -> None:
        self.spec = spec
        self.processor = spec.load()
        self.dtype = np.dtype(spec.dtype)
        if spec.backend == "huggingface":
            self._batch = getattr(self.processor, "encode_batch_fast", self.processor.encode_batch)
        else:
            self._batch = None

    def encode(
        self, texts: list[str], bos: bool | None = None, eos: bool = False, keep_final_eos: bool = False
    ) -> list[np.ndarray]:
        """One token array per text (views of one flat array)."""
        if not texts:
            return []
        flat, counts = self.encode_flat(texts, bos, eos, keep_final_eos)
        return np.split(flat, np.cumsum(counts)[:-1])

    def encode_flat(
        self,
        texts: list[str],
        bos: bool | None | np.ndarray = None,
        eos: bool | np.ndarray = False,
        keep_final_eos: bool = False,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The tokens of ``texts`` one after the other, and each text's count (int64). ``bos`` / ``eos``: one value
        for every text, or a bool array with one per text."""
        if self._batch is not None:
            id_lists = [encoding.ids for encoding in self._batch(texts)]
        else:
            id_lists = self.processor.encode(texts)
        counts = np.fromiter(map(len, id_lists), dtype=np.int64, count=len(id_lists))
        flat = np.fromiter(itertools.chain.from_iterable(id_lists), dtype=np.int64, count=int(counts.sum()))
        flat, counts = self._finish(flat, counts, self.spec.use_bos if bos is None else bos, eos, keep_final_eos)
        return flat.astype(self.dtype, copy=False), counts

    def _finish(
        self, flat: np.ndarray, counts: np.ndarray, bos: bool | np.ndarray, eos: bool | np.ndarray, keep_eos: bool
    ) -> tuple[np.ndarray, np.ndarray]:
        """litgpt's BOS then EOS rules on every text of ``flat``, at once."""
        spec, size = self.spec, len(counts)
        want_bos, want_eos = np.broadcast_to(bos, (size,)), np.broadcast_to(eos, (size,))
        if spec.bos_id is None and want_bos.any():
            raise ValueError("this tokenizer has no BOS token to add; set use_bos false.")
        bos_id = -1 if spec.bos_id is None else spec.bos_id
        ends = np.cumsum(counts)
        starts = ends - counts
        nonempty = counts > 0
        first = np.full(size, -1, dtype=np.int64)
        first[nonempty] = flat[starts[nonempty]]
        is_bos_first = nonempty & (first == bos_id)
        add_bos = want_bos & ~is_bos_first
        strip_bos = ~want_bos & is_bos_first
        body = counts - strip_bos
        last = np.where(add_bos, bos_id, -1)
        last[body > 0] = flat[ends[body > 0] - 1]
        is_eos_last = (body + add_bos > 0) & (last == spec.eos_id)
        add_eos = want_eos & ~is_eos_last
        strip_eos = is_eos_last & ~(want_eos & keep_eos)
        strip_last = strip_eos & (body > 0)
        add_bos &= ~(strip_eos & (body == 0))  # the EOS taken off is the BOS just added
        if not (add_bos.any() or add_eos.any() or strip_bos.any() or strip_last.any()):
            return flat, counts
        keep = np.ones(len(flat), dtype=bool)
        keep[starts[strip_bos]] = False
        keep[ends[strip_last] - 1] = False
        out_counts = add_bos + body - strip_last + add_eos
        out_ends = np.cumsum(out_counts)
        out_starts = out_ends - out_counts
        out = np.empty(int(out_ends[-1]), dtype=np.int64)
        is_body = np.ones(len(out), dtype=bool)
        is_body[out_starts[add_bos]] = False
        is_body[out_ends[add_eos] - 1] = False
        out[is_body] = flat[keep]
        out[out_starts[add_bos]] = bos_id
        out[out_ends[add_eos] - 1] = spec.eos_id
        return out, out_counts


_ENCODERS: dict[TokenizerSpec, Encoder] = {}


def encoder_for(spec: TokenizerSpec) -> Encoder:
    """The process's encoder for ``spec`` (loaded once)."""
    if spec not in _ENCODERS:
        _ENCODERS[spec] = Encoder(spec)
    return _ENCODERS[spec]
