"""No train/val leakage: ``prepare --overwrite`` never leaves an old held-out shard beside a new train shard, both
manifests name the prepare run that wrote them, and setup and ``inspect`` refuse a val shard of another run."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
from test_prepare import write_jsonl, write_tokenizer

from sharded_mix import ShardedMixedDataset
from sharded_mix.cli import main
from sharded_mix.tools.prepare import prepare_shard

DOCS = [{"text": f"document {i}: the quick brown fox {i * 7 % 13} jumps over the lazy dog"} for i in range(40)]


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tokenizer(tmp_path_factory.mktemp("tokenizer"))


@pytest.fixture
def rows(tmp_path: Path) -> Path:
    return write_jsonl(tmp_path / "rows.jsonl", DOCS)


def manifest(shard: Path) -> dict:
    return json.loads((shard / "manifest.json").read_text())


def prepare(rows: Path, tokenizer_dir: Path, output: Path, **options):
    return prepare_shard([rows], tokenizer_dir, output, progress=False, **options)


def test_train_and_val_manifests_share_the_prepare_run_and_a_rerun_rewrites_both(tmp_path, rows, tokenizer_dir):
    train, val = tmp_path / "data" / "train" / "c1", tmp_path / "data" / "val" / "c1"
    prepare(rows, tokenizer_dir, train, val_docs=5)
    first = manifest(train)["prepare_run"]
    assert len(first) == 32 and manifest(val)["prepare_run"] == first
    prepare(rows, tokenizer_dir, train, val_docs=3, max_docs=30, overwrite=True)
    assert manifest(val)["prepare_run"] == manifest(train)["prepare_run"] != first
    assert (manifest(train)["documents"], manifest(val)["documents"]) == (27, 3)


def test_overwrite_without_holding_out_removes_the_old_val_shard(tmp_path, rows, tokenizer_dir, caplog):
    train, val = tmp_path / "data" / "c1", tmp_path / "data" / "val" / "c1"
    prepare(rows, tokenizer_dir, train, val_docs=5)
    with caplog.at_level(logging.WARNING, logger="sharded_mix.tools.prepare_output"):
        prepare(rows, tokenizer_dir, train, max_docs=30, overwrite=True)
    assert not val.exists() and manifest(train)["documents"] == 30
    assert [record.getMessage() for record in caplog.records if record.levelno >= logging.WARNING] == [
        f"removing {val}, the held-out val shard of the old {train} (--overwrite): this run does not rewrite it, and "
        "its documents may be in the new training shard"
    ]


def test_a_val_output_elsewhere_is_removed_too_and_other_shards_are_kept(tmp_path, rows, tokenizer_dir):
    train, elsewhere = tmp_path / "data" / "c1", tmp_path / "held" / "c1"
    prepare(rows, tokenizer_dir, train, val_docs=5, val_output=elsewhere)
    prepare(rows, tokenizer_dir, tmp_path / "data" / "c2", val_docs=5)  # data/val/c2: another shard's
    prepare(rows, tokenizer_dir, train, val_docs=4, overwrite=True)
    assert not elsewhere.exists() and manifest(tmp_path / "data" / "val" / "c1")["documents"] == 4
    assert (tmp_path / "data" / "val" / "c2" / "index.json").is_file()


@pytest.fixture
def stale_pair(tmp_path, rows, tokenizer_dir) -> tuple[Path, Path]:
    """``data/train/c1`` re-prepared without a val split, and the val shard of its first prepare put back."""
    train, val = tmp_path / "data" / "train" / "c1", tmp_path / "data" / "val" / "c1"
    prepare(rows, tokenizer_dir, train, val_docs=5)
    shutil.copytree(val, tmp_path / "old-val")
    prepare(rows, tokenizer_dir, train, overwrite=True)
    shutil.copytree(tmp_path / "old-val", val)
    return train, val


def set_up(data_path: Path) -> ShardedMixedDataset:
    data = ShardedMixedDataset(data_path=data_path, literal_weights_str="c1:1", num_workers=0)
    data.connect(batch_size=2, max_seq_length=7)
    data.setup()
    return data


def test_setup_and_inspect_refuse_a_val_shard_of_another_prepare_run(stale_pair, capsys):
    train, val = stale_pair
    val_run, train_run = manifest(val)["prepare_run"], manifest(train)["prepare_run"]
    expected = (
        f"validation shard '{val}' was written by prepare run {val_run}, but its training shard '{train}' by prepare "
        f"run {train_run}: the validation documents may be in the training shard. Re-run `sharded-mix prepare` for "
        "that shard with --val-docs or --val-fraction (it writes both), or point val_data_path elsewhere."
    )
    with pytest.raises(ValueError) as raised:
        set_up(train.parent.parent)
    assert str(raised.value) == f"val_data_path: {expected}"
    assert main(["inspect", "--verify", str(train.parent.parent)]) == 1
    assert f"  - {expected}" in capsys.readouterr().out


def test_manifests_without_the_prepare_run_are_not_refused(stale_pair, capsys):
    train, val = stale_pair
    old = manifest(val)
    del old["prepare_run"]
    (val / "manifest.json").write_text(json.dumps(old))
    assert set_up(train.parent.parent).val_mixture.shards[0].path == str(val)
    assert main(["inspect", "--verify", str(train.parent.parent)]) == 0


def test_a_val_shard_prepared_on_its_own_is_not_paired(tmp_path, rows, tokenizer_dir, capsys):
    train, val = tmp_path / "data" / "train" / "c1", tmp_path / "data" / "val" / "c1"
    prepare(rows, tokenizer_dir, train)  # two prepare runs, as the demo writes its train and val shards
    prepare(write_jsonl(tmp_path / "val.jsonl", DOCS[:5]), tokenizer_dir, val)
    assert manifest(val)["prepare_run"] != manifest(train)["prepare_run"]
    assert set_up(train.parent.parent).val_mixture.shards[0].path == str(val)
    assert main(["inspect", "--verify", str(train.parent.parent)]) == 0


def test_an_interrupted_prepare_is_named_and_overwrite_replaces_it(tmp_path, rows, tokenizer_dir):
    out = tmp_path / "c1"
    out.mkdir()
    (out / "chunk-0-0.bin").write_bytes(b"\0" * 64)
    (out / ".documents-0.bin").write_bytes(b"")
    with pytest.raises(
        FileExistsError,
        match=rf"^--output '{out}' holds 2 shard file\(s\) \(chunk files, document records\) but no index\.json: it "
        r"looks like an interrupted `sharded-mix prepare`; pass --overwrite to replace it, or pick another --output$",
    ):
        prepare(rows, tokenizer_dir, out)
    assert prepare(rows, tokenizer_dir, out, overwrite=True).documents == 40
