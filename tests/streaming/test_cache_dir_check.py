"""``cache_dir`` is checked at setup when the run needs it (remote shards, or chunk verification's ledger): one
``ValueError`` naming it, not a raw ``NotADirectoryError`` at the first read."""

from __future__ import annotations

from pathlib import Path

import pytest
import s3_server
from conftest import BLOCK, make, write_source

from sharded_mix import ShardedMixedDataset
from sharded_mix.cli import main
from sharded_mix.streaming.cache import CACHE_DIR_VARIABLE

s3 = s3_server.s3  # the fixture
BLEND = "main:0.6,code:0.4"


@pytest.fixture
def base(tmp_path: Path) -> Path:
    base = tmp_path / "data"
    write_source(base, "main/1", 1, 1200, doc_tokens=BLOCK, chunk_bytes=1024)
    write_source(base, "c1", 2, 800, doc_tokens=BLOCK, chunk_bytes=1024)
    return base


@pytest.fixture
def a_file(tmp_path: Path) -> Path:
    path = tmp_path / "not-a-dir"
    path.write_text("x")
    return path


def hashed(base: Path) -> Path:
    assert main(["hash", str(base), "--no-progress"]) == 0
    return base


@pytest.mark.parametrize(
    "where, reason", [("itself", "it is a file, not a directory"), ("inside", r"Not a directory \(.*/cache\)")]
)
def test_an_unusable_cache_dir_is_refused_at_setup_when_chunks_are_verified(base, a_file, where, reason):
    cache_dir = a_file if where == "itself" else a_file / "cache"
    with pytest.raises(
        ValueError,
        match=rf"^cache_dir '{cache_dir}' cannot be used: {reason}; verify_chunks: first_read keeps its ledger "
        r"there\. Set cache_dir \(or \$SHARDED_MIX_CACHE_DIR\) to a writable directory on local disk, or set "
        r"verify_chunks: off\.$",
    ):
        make(hashed(base), mix_weights_str=BLEND, cache_dir=str(cache_dir))


def test_the_default_cache_dir_is_named_as_the_default(base, a_file, monkeypatch):
    monkeypatch.setenv(CACHE_DIR_VARIABLE, str(a_file))
    with pytest.raises(ValueError, match=rf"^cache_dir \(default '{a_file}'\) cannot be used: "):
        make(hashed(base), mix_weights_str=BLEND)


def test_a_run_that_needs_no_cache_does_not_check_it(base, a_file, tmp_path):
    make(base, mix_weights_str=BLEND, cache_dir=str(a_file))  # no hashes, no tokenizer: nothing verified
    make(base, mix_weights_str=BLEND, cache_dir=str(tmp_path / "new" / "cache"))
    assert not (tmp_path / "new").exists()
    make(hashed(base), mix_weights_str=BLEND, cache_dir=str(a_file), verify_chunks="off")


def test_remote_shards_need_a_usable_cache_dir(base, a_file, s3):
    url = f"s3://{s3.new_bucket()}/mix"
    s3.upload(base, url)
    data = ShardedMixedDataset(
        data_path=url,
        val_data_path=f"{url}/main/1",
        mix_weights_str=BLEND,
        num_workers=0,
        storage_options=s3.options,
        cache_dir=str(a_file / "cache"),
        verify_chunks="off",
    )
    data.connect(batch_size=4, max_seq_length=BLOCK - 1)
    with pytest.raises(ValueError, match=r"cannot be used: .*; remote chunks are downloaded there\. Set cache_dir"):
        data.setup()
