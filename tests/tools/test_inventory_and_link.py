"""`sharded-mix inspect` on good and broken layouts; `sharded-mix link` and every refusal."""

import json

import numpy as np
import pytest
import torch
from conftest import write_source, write_token_shard

from sharded_mix.cli import main
from sharded_mix.streaming.discovery import discover_shards
from sharded_mix.tools.inventory import inspect_base, inspect_data_path
from sharded_mix.tools.link import link_data


def test_inspect_a_good_reference_layout(tmp_path, capsys):
    write_source(tmp_path / "data" / "train", "1", 1, 3000)
    write_source(tmp_path / "data" / "train", "m1", 2, 1200)
    write_source(tmp_path / "data" / "val", "1", 1, 500)
    assert main(["inspect", str(tmp_path / "data")]) == 0
    out = capsys.readouterr().out
    assert "===== train: " in out and "===== val: " in out
    rows = {line.split()[0]: line.split()[1:6] for line in out.splitlines() if line.startswith(("main/1 ", "m1 "))}
    assert rows["m1"] == ["math", "1,200", "12", rows["m1"][3], "int32"]
    assert "total math" in out and "problems: none" in out
    assert main(["inspect", str(tmp_path / "data"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report[0]["totals_by_type"]["main"]["tokens"] == 3000 and report[1]["label"] == "val"


def test_inspect_reports_broken_shards_and_mixed_dtypes(tmp_path, capsys):
    base = tmp_path / "data"
    write_source(base, "1", 1, 3000)
    write_token_shard(base / "c1", [np.arange(2000) % 60000], dtype=torch.uint16)
    write_source(base, "m1", 2, 3000)
    chunk = sorted((base / "m1").glob("*.bin"))[0]
    chunk.unlink()
    (base / "q1").mkdir()
    (base / "q1" / "index.json").write_text("{not json")
    inventory = inspect_base(base)
    problems = inventory.all_problems()
    assert any(p.startswith("m1: chunk file ") and f"{chunk.name}' is missing" in p for p in problems)
    assert any(p.startswith("q1: unreadable index") for p in problems)
    assert any(p.startswith("mixed token dtypes (int32: m1, main/1; uint16: c1)") for p in problems)
    q1 = next(s for s in inventory.shards if s.id == "q1")
    assert (q1.tokens, q1.dtype) == (None, None)
    assert main(["inspect", str(base)]) == 1
    assert "problems: 3" in capsys.readouterr().out


def test_inspect_refuses_a_missing_directory(tmp_path):
    with pytest.raises(ValueError, match="is not a directory"):
        inspect_data_path(tmp_path / "nope")


@pytest.fixture
def elsewhere(tmp_path):
    """litdata directories in their own places, as on a cluster's shared storage."""
    for number, name in enumerate(["fineweb", "fineweb2", "proofpile", "stack"], start=1):
        write_source(tmp_path / "store", name, number, 1000)
    return tmp_path / "store"


def test_link_assembles_a_base_directory_discovery_understands(elsewhere, tmp_path, capsys):
    base = tmp_path / "mix"
    args = [
        "link",
        str(base),
        "--main",
        str(elsewhere / "fineweb"),
        "--main",
        str(elsewhere / "fineweb2"),
        "--as",
        f"m1={elsewhere / 'proofpile'}",
        "--as",
        f"c1={elsewhere / 'stack'}",
    ]
    assert main([*args, "--dry-run"]) == 0
    assert not base.exists() and capsys.readouterr().out.count("would link:") == 4
    assert main(args) == 0
    assert [(s.id, s.type) for s in discover_shards(base)] == [
        ("c1", "code"),
        ("m1", "math"),
        ("main/1", "main"),
        ("main/2", "main"),
    ]
    assert (base / "main" / "2").resolve() == (elsewhere / "fineweb2").resolve()
    assert main(args) == 0 and capsys.readouterr().out.count("already linked:") == 4  # idempotent


@pytest.mark.parametrize(
    "main_dirs, named, message",
    [
        ([], {}, "nothing to link"),
        ([], {"x1": "stack"}, r"'x1' is not a shard name discovery finds; use main/N, N, or c?N \(code\)"),
        ([], {"m1": "missing"}, "m1=.*missing: not a directory"),
        ([], {"m1": "."}, "cannot read index.json"),
        (["fineweb"], {"1": "fineweb2"}, "main shards given both as main/N and as plain numbers"),
        (["fineweb"], {"main/1": "fineweb2"}, "shard 'main/1' is given twice"),
    ],
)
def test_link_refusals(elsewhere, tmp_path, main_dirs, named, message):
    with pytest.raises(ValueError, match=message):
        link_data(
            tmp_path / "mix", [elsewhere / d for d in main_dirs], {name: elsewhere / d for name, d in named.items()}
        )
    assert not (tmp_path / "mix").exists()


def test_link_never_replaces_an_existing_entry(elsewhere, tmp_path, capsys):
    base = tmp_path / "mix"
    (base / "m1").mkdir(parents=True)
    with pytest.raises(ValueError, match="already exists and is not a link to .*refusing to replace it"):
        link_data(base, named={"m1": elsewhere / "proofpile"})
    with pytest.raises(SystemExit):  # argparse rejects a pair without '='
        main(["link", str(base), "--as", "m1"])
    assert main(["link", str(base), "--as", f"m1={elsewhere / 'proofpile'}"]) == 2
    assert "refusing to replace it" in capsys.readouterr().err
