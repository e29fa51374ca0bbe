"""The run's data on disk or in a store, found and checked before training: the train and validation bases, their
shards and weights, every chunk file, the cache budget and one token dtype (the I/O half of ``setup``)."""

from __future__ import annotations

import difflib
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

from sharded_mix.mixing.run_plan import check_blocks
from sharded_mix.shards import MAIN_TYPE, Shard
from sharded_mix.streaming.cache import CACHE_DIR_VARIABLE, ChunkCache
from sharded_mix.streaming.chunk_checks import capped, chunk_file_problems
from sharded_mix.streaming.discovery import discover_shards
from sharded_mix.streaming.distributed import from_rank_zero
from sharded_mix.streaming.storage import RemoteDir, is_url, join_url


@dataclass(frozen=True)
class Mixture:
    """Shards found under one base directory and the weight of each."""

    base: str
    shards: tuple[Shard, ...]
    weights: dict[str, float]

    @property
    def sources(self) -> list[Shard]:
        return [shard for shard in self.shards if self.weights.get(shard.id, 0) > 0]


def _missing_path(data_path: str) -> ValueError:
    parent, name = os.path.split(os.path.normpath(data_path))
    siblings = sorted(os.listdir(parent or ".")) if os.path.isdir(parent or ".") else []
    close = difflib.get_close_matches(name, siblings, n=1)
    hint = f" (did you mean {os.path.join(parent, close[0])!r}?)" if close else ""
    return ValueError(
        f"data_path {data_path!r} does not exist{hint}; point data_path at the base directory of your shards "
        "(what `sharded-mix prepare` or `sharded-mix link` wrote), or at one litdata directory."
    )


def data_dirs(data_path: str, val_data_path: str | None, storage_options: Mapping | None) -> tuple[str, str | None]:
    """The training base and the validation path (None if there is none), directories or URLs; a local
    ``data_path`` that does not exist is an error naming it."""
    if not is_url(data_path) and not os.path.exists(data_path):
        raise _missing_path(data_path)
    if val_data_path is not None:
        return data_path, val_data_path
    if is_url(data_path):
        data_path = data_path.rstrip("/")
        subdirs = set(from_rank_zero(lambda: RemoteDir(data_path, storage_options).list_dir()[0]))
        if "train" in subdirs:
            return join_url(data_path, "train"), join_url(data_path, "val") if "val" in subdirs else None
        return data_path, None
    reference_train, reference_val = os.path.join(data_path, "train"), os.path.join(data_path, "val")
    if os.path.isdir(reference_train):
        return reference_train, reference_val if os.path.isdir(reference_val) else None
    return data_path, None


def discover_mixture(
    base: str,
    field_name: str,
    weigh: Callable[[list[Shard]], dict[str, float]],
    shard_types: Mapping[str, str],
    exclude: Sequence[str],
    storage_options: Mapping | None,
    block_size: int,
) -> Mixture:
    """The shards under ``base`` (discovered by rank zero, sent to every rank) weighted by ``weigh``; a single
    litdata directory is one source, ``main``."""
    shards = from_rank_zero(
        lambda: discover_shards(base, shard_types, field=field_name, exclude=exclude, storage_options=storage_options)
    )
    if len(shards) == 1 and shards[0].id == MAIN_TYPE:  # only a single litdata directory gets the bare id
        weights = {shards[0].id: 1.0}
    else:
        try:
            weights = weigh(shards)
        except ValueError as err:
            raise ValueError(f"{field_name} {base!r}: {err}") from None
    mixture = Mixture(base=base, shards=tuple(shards), weights=weights)
    check_blocks(mixture.sources, block_size, f"{field_name} {base!r}", "max_seq_length + 1")
    return mixture


def _location(path: str) -> str:
    return path.rstrip("/") if is_url(path) else os.path.realpath(path)


def reused_for_validation(path: str, train: Mixture) -> Mixture | None:
    """The validation mixture when ``path`` is the training base (the training mixture itself) or one of its shards
    (that shard alone): what was discovered and checked for training is not discovered again."""
    wanted = _location(path)
    if wanted == _location(train.base):
        return train
    for shard in train.shards:
        if _location(shard.path) == wanted:
            same = replace(shard, id=MAIN_TYPE, type=MAIN_TYPE)  # the id a single litdata directory gets
            return Mixture(base=path, shards=(same,), weights={MAIN_TYPE: 1.0})
    return None


def check_chunk_files(shards: Sequence[Shard]) -> None:
    """Every chunk file of the run's shards is there, readable and of its indexed size (one stat each, no reads)."""
    problems = [problem for shard in shards for problem in chunk_file_problems(shard, limit=5)]
    if problems:
        shown = capped(problems, 20, "problems")
        raise ValueError(
            "the shards of this run have chunk file problems, found before training:\n  "
            + "\n  ".join(shown)
            + "\n`sharded-mix inspect --verify DATA_PATH` lists every shard's problems."
        )


def check_cache_budget(shards: Sequence[Shard], max_cache_size: int | None, per_source: int, detail: str) -> None:
    """``max_cache_size`` must hold ``per_source`` of each remote source's largest chunks (window and read-ahead)."""
    remote = [shard for shard in shards if is_url(shard.path) and shard.chunks]
    if max_cache_size is None or not remote:
        return
    needed = sum(per_source * max(shard.chunk_bytes(chunk) or 0 for chunk in range(shard.chunks)) for shard in remote)
    if max_cache_size < needed:
        raise ValueError(
            f"max_cache_size {max_cache_size:,} bytes is below the working set of this run's {len(remote)} remote "
            f"source(s): {needed:,} bytes ({per_source} of each source's largest chunks: {detail}); raise it to at "
            f"least {needed:,}, or lower prefetch_chunks."
        )


def check_one_dtype(trained: Sequence[Shard], validation: Sequence[Shard], base: str) -> None:
    """The shards a run reads share one token dtype."""
    dtypes = {
        (f"{label}{shard.id}", shard.dtype) for label, group in (("", trained), ("val:", validation)) for shard in group
    }
    if len({dtype for _, dtype in dtypes}) > 1:
        listing = ", ".join(f"{shard_id}={dtype}" for shard_id, dtype in sorted(dtypes))
        raise ValueError(
            f"data_path {base!r}: the shards in the blend have different token dtypes ({listing}); "
            "re-prepare them with one tokenizer (same vocabulary size) so they share a dtype."
        )


def held_out_mismatch(val_path: str, val_run: object, train_path: str, train_run: object) -> str | None:
    """Why the validation shard at ``val_path`` is not the held-out part of the training shard at ``train_path``: the
    ``prepare`` runs that wrote them differ (None: they match, or either manifest does not say)."""
    if not val_run or not train_run or val_run == train_run or _location(val_path) == _location(train_path):
        return None
    return (
        f"validation shard {val_path!r} was written by prepare run {val_run}, but its training shard {train_path!r} by "
        f"prepare run {train_run}: the validation documents may be in the training shard. Re-run `sharded-mix prepare` "
        "for that shard with --val-docs or --val-fraction (it writes both), or point val_data_path elsewhere."
    )


def check_held_out(trained: Sequence[Shard], validation: Sequence[Shard]) -> None:
    """Each held-out validation shard with the id of a trained shard was written by the same ``prepare`` run (when
    both manifests name it): a held-out shard left from an earlier prepare is refused. A validation shard prepared on
    its own (its manifest's split is ``train``) is the user's choice and not paired."""
    by_id = {shard.id: shard for shard in trained}
    for val in validation:
        train = by_id.get(val.id) if val.held_out else None
        problem = train and held_out_mismatch(val.path, val.prepare_run, train.path, train.prepare_run)
        if problem:
            raise ValueError(f"val_data_path: {problem}")


def check_cache_dir(
    cache: ChunkCache, trained: Sequence[Shard], validation: Sequence[Shard], configured: str | None
) -> None:
    """``cache_dir`` exists (or can be made) and is writable, when the run needs it: remote shards are downloaded
    there, and the verification of trained chunks keeps its ledger there."""
    remote = any(is_url(shard.path) for shard in [*trained, *validation])
    if not remote and not any(cache.verifies(shard) for shard in trained):
        return
    directory, problem = cache.cache_dir, None
    if directory.exists() and not directory.is_dir():
        problem = "it is a file, not a directory"
    else:
        try:
            directory.mkdir(parents=True, exist_ok=True)
            tempfile.TemporaryFile(dir=directory).close()
        except OSError as err:
            problem = f"{err.strerror or err} ({err.filename or directory})"
    if problem:
        value = repr(configured) if configured else f"(default {str(directory)!r})"
        use = "remote chunks are downloaded there" if remote else "verify_chunks: first_read keeps its ledger there"
        raise ValueError(
            f"cache_dir {value} cannot be used: {problem}; {use}. Set cache_dir (or ${CACHE_DIR_VARIABLE}) to a "
            "writable directory on local disk" + ("." if remote else ", or set verify_chunks: off.")
        )


def unhashed_note(shards: Sequence[Shard], verify_chunks: str) -> str | None:
    """The INFO line for training shards without content hashes when verification is on (None: nothing to say)."""
    unhashed = [shard.id for shard in shards if not shard.chunk_hashes]
    if verify_chunks == "off" or not unhashed:
        return None
    return (
        f"verify_chunks: {len(unhashed)} of {len(shards)} training shard(s) have no content hashes "
        f"({', '.join(capped(unhashed, 8))}): their chunks are checked by size only; `sharded-mix hash <base dir>` "
        "adds hashes, verified once per node from then on"
    )


def check_single_directory_blend(schedule: Sequence, base: str) -> None:
    """A blend naming anything but ``main`` cannot apply to one litdata directory: refuse it, not ignore it."""
    for stage in schedule:
        named = sorted(name for name, weight in stage.spec.weights.items() if weight > 0 and name != MAIN_TYPE)
        if named:
            where = "" if len(schedule) == 1 else f"stage {stage.name!r}: "
            raise ValueError(
                f"{where}data_path {base!r} is one litdata directory (it holds index.json), but "
                f"{stage.spec.origin} names {', '.join(named)}: the blend would be ignored. Point data_path at the "
                "base directory holding the typed shards (1/, c1/, m1/, ...), or drop the blend to train this "
                "directory alone."
            )
