"""Per-source ``data/`` metrics in LitGPT's own CSV log, through the real `litgpt pretrain` command."""

import csv
import itertools
import json
import math
import re
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from conftest import write_token_shard
from litgpt_runs import LITGPT, pretrain_config, run_pretrain

from sharded_mix import ShardedMixedDataset

STRIDE = 10_000
"""Token = source number × STRIDE + position (below pythia-14m's vocabulary), so every row names its source."""
SOURCES = {"main/1": 1, "c1": 2, "m1": 3}
BLEND = "main/1:0.5,c1:0.3,m1:0.2"
WEIGHTS = {"main/1": 0.5, "c1": 0.3, "m1": 0.2}
INIT_ARGS = {"data_path": "data", "val_data_path": "data/main/1", "literal_weights_str": BLEND}


def write_sources(base: Path) -> None:
    for shard, number in SOURCES.items():
        tokens = number * STRIDE + np.arange(8_000, dtype=np.int64)
        write_token_shard(base / shard, [tokens[i : i + 400] for i in range(0, 8_000, 400)], chunk_bytes=8000)


def logged(out_dir: Path) -> list[dict[str, str]]:
    (metrics,) = out_dir.glob("logs/csv/version_*/metrics.csv")
    return [row for row in csv.DictReader(metrics.open()) if row.get("loss")]


def drawn_in_python(root: Path, batches: int) -> Counter:
    """Rows per source of the first ``batches`` batches, read from the tokens of the data module's own batches."""
    data = ShardedMixedDataset(**{**INIT_ARGS, "data_path": root / "data", "val_data_path": root / "data/main/1"})
    data.num_workers = 0
    data.connect(batch_size=4, max_seq_length=64)
    data.setup()
    by_number = {number: shard for shard, number in SOURCES.items()}
    rows = Counter()
    for batch in itertools.islice(iter(data.train_dataloader()), batches):
        rows.update(by_number[int(row[0]) // STRIDE] for row in batch)
    return rows


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("metrics")
    write_sources(root / "data")
    (root / "output.txt").write_text(run_pretrain(pretrain_config(root, {"num_workers": 1, **INIT_ARGS}), cwd=root))
    return root


def test_the_csv_log_holds_exact_per_source_counts_and_losses(run):
    rows = logged(run / "out")
    assert [int(row["iter"]) for row in rows] == [1, 2, 3, 4, 5, 6]
    last = rows[-1]
    expected = drawn_in_python(run, 6)
    assert sum(expected.values()) == 24 and set(expected) == set(SOURCES)
    for source in SOURCES:
        assert float(last[f"data/samples/{source}"]) == expected[source]
        assert float(last[f"data/tokens/{source}"]) == expected[source] * 64
        assert float(last[f"data/share/{source}"]) == pytest.approx(expected[source] / 24)
        assert float(last[f"data/target/{source}"]) == pytest.approx(WEIGHTS[source])
        assert 0 < float(last[f"data/epoch/{source}"]) < 1
    for step, row in enumerate(rows, start=1):  # every logged step matches the stream so far
        counts = drawn_in_python(run, step)
        assert {source: float(row[f"data/samples/{source}"]) for source in SOURCES} == {
            source: counts[source] for source in SOURCES
        }
        # the loss of a step's rows of each source it read (log_interval 1: the window is the step)
        in_step = counts - drawn_in_python(run, step - 1)
        for source in SOURCES:
            loss = row[f"data/loss/{source}"]
            assert (loss != "") == (in_step[source] > 0), (step, source, loss)
            assert loss == "" or (math.isfinite(float(loss)) and float(loss) > 0)


def test_the_run_ends_with_a_per_source_summary(run):
    output = (run / "output.txt").read_text()
    summary = output[output.index("===== DATA SUMMARY: 24 samples over all ranks, stage default =====") :]
    expected = drawn_in_python(run, 6)
    for source in SOURCES:
        assert re.search(rf"\n{re.escape(source)} +{expected[source]} +{expected[source] * 64:,} ", summary), source


def test_a_resumed_run_ends_with_the_same_counts(run):
    resumed = run / "resumed"
    resumed.mkdir()
    shutil.copytree(run / "data", resumed / "data")
    config = pretrain_config(resumed, {"num_workers": 1, **INIT_ARGS})
    run_pretrain(config, resumed, "--resume", str(run / "out" / "step-00000003" / "lit_model.pth"))
    straight, again = logged(run / "out")[-1], logged(resumed / "out")[-1]
    assert int(again["iter"]) == 6
    for source in SOURCES:
        for measure in ("samples", "tokens", "share", "epoch"):
            assert again[f"data/{measure}/{source}"] == straight[f"data/{measure}/{source}"], (measure, source)


def test_the_training_loss_is_the_same_without_the_metrics(run):
    off = run / "off"
    off.mkdir()
    shutil.copytree(run / "data", off / "data")
    run_pretrain(pretrain_config(off, {"num_workers": 1, "log_data_metrics": False, **INIT_ARGS}), cwd=off)
    with_metrics, without = logged(run / "out"), logged(off / "out")
    assert [row["loss"] for row in without] == [row["loss"] for row in with_metrics]  # bit for bit
    assert not [key for key in without[0] if key.startswith("data/")]


def test_batch_names_the_rows_a_step_of_the_run_read(run):
    data = ShardedMixedDataset(**{**INIT_ARGS, "data_path": run / "data", "val_data_path": run / "data/main/1"})
    data.num_workers = 0
    data.connect(batch_size=4, max_seq_length=64)
    data.setup()
    by_number = {number: shard for shard, number in SOURCES.items()}
    batches = list(itertools.islice(iter(data.train_dataloader()), 6))
    sharded_mix = str(Path(LITGPT).parent / "sharded-mix")
    for step in (2, 5, 6):  # before and after the step-3 checkpoint, and the last
        result = subprocess.run(
            [sharded_mix, "batch", "out", "--step", str(step), "--json"], cwd=run, capture_output=True, text=True
        )
        assert result.returncode == 0, result.stderr
        rows = json.loads(result.stdout)["rows"]
        expected = [(by_number[int(row[0]) // STRIDE], int(row[0]) % STRIDE) for row in batches[step - 1]]
        assert [(row["source"], row["position"]) for row in rows] == expected, step
