"""``sharded-mix batch``: the rows of a step, row by row against what the data module yields."""

import itertools
import json

import pytest
import torch
import yaml
from conftest import BLOCK, SOURCE_STRIDE, make, source_of, write_token_shard

from sharded_mix.cli import main
from sharded_mix.tools.batch import reads_of, step_rows_of

IDS = {1: "main/1", 2: "m1"}
MICRO, GLOBAL = 4, 8  # two micro-batches a step on one rank
STAGES = [
    {"name": "warmup", "start_step": 0, "literal_weights_str": "main/1:1"},
    {"name": "mix", "start_step": 2, "literal_weights_str": "main/1:0.6,m1:0.4"},
    {"name": "math", "start_step": 5, "literal_weights_str": "m1:1", "seed": 7},
]


def write_config(path, base, world=1, resume=None, **init_args):
    init_args = {"data_path": str(base), "val_data_path": str(base / "main" / "1"), "num_workers": 0, **init_args}
    config = {
        "data": {"class_path": "sharded_mix.ShardedMixedDataset", "init_args": init_args},
        "train": {"micro_batch_size": MICRO, "global_batch_size": GLOBAL, "max_seq_length": BLOCK - 1},
        "devices": world,
        "resume": resume,
    }
    path.write_text(yaml.safe_dump(config))
    return path


def yielded(base, steps, world=1, rank=0, state=None, **fields):
    """``(source, position)`` of each row of the first ``steps`` steps the data module yields on ``rank``."""
    loader = make(base, batch_size=MICRO, global_batch_size=GLOBAL, **fields).train_dataloader()
    if state is not None:
        loader.load_state_dict(state)
    per_step = GLOBAL // world // MICRO
    batches = list(itertools.islice(iter(loader), steps * per_step))
    rows = [(IDS[source_of(row)], int(row[0]) % SOURCE_STRIDE) for batch in batches for row in batch]
    return [rows[i : i + GLOBAL // world] for i in range(0, len(rows), GLOBAL // world)], loader


def described(rows, rank=0):
    return [(row.source, row.position) for row in rows if row.rank == rank]


@pytest.mark.parametrize("fields", [{"literal_weights_str": "main/1:0.6,m1:0.4"}, {"stages": STAGES}])
def test_every_step_is_the_rows_the_module_yields(scenario, tmp_path, fields):
    config = write_config(tmp_path / "run.yaml", scenario, **fields)
    expected, _ = yielded(scenario, 8, **fields)
    for step in range(1, 9):
        rows, world, _ = step_rows_of(config, step)
        assert world == 1 and described(rows) == expected[step - 1], step
        assert [row.sample for row in rows] == list(range((step - 1) * GLOBAL, step * GLOBAL))
        assert [(row.micro_batch, row.row) for row in rows] == [(i // MICRO, i % MICRO) for i in range(GLOBAL)]
        assert all(row.chunk.startswith("chunk-") and row.epoch == 0 for row in rows)


def test_each_rank_gets_its_rows(scenario, tmp_path, monkeypatch):
    config = write_config(tmp_path / "run.yaml", scenario, world=2, stages=STAGES)
    monkeypatch.setenv("WORLD_SIZE", "2")
    for rank in (0, 1):
        monkeypatch.setenv("RANK", str(rank))
        expected, _ = yielded(scenario, 7, world=2, stages=STAGES)
        for step in (1, 3, 6, 7):
            rows, world, _ = step_rows_of(config, step)
            assert world == 2 and described(rows, rank) == expected[step - 1], (rank, step)
            assert all(row.sample % 2 == row.rank for row in rows)


def test_a_midtrain_config_continues_its_checkpoint_with_the_new_blend(scenario, tmp_path):
    _, pretrain = yielded(scenario, 3, literal_weights_str="main/1:1")
    checkpoint = tmp_path / "pretrain" / "step-00000003" / "lit_model.pth"
    checkpoint.parent.mkdir(parents=True)
    torch.save({"train_dataloader": pretrain.state_dict(), "iter_num": 6, "step_count": 3}, checkpoint)
    config = write_config(tmp_path / "mid.yaml", scenario, resume=str(checkpoint), literal_weights_str="m1:1")
    expected, _ = yielded(scenario, 3, state=pretrain.state_dict(), literal_weights_str="m1:1")
    for step in (4, 5, 6):
        assert described(step_rows_of(config, step)[0]) == expected[step - 4], step
    pretrained, _ = yielded(scenario, 3, literal_weights_str="main/1:1")  # steps up to 3: the pretraining run's
    (checkpoint.parent / "hyperparameters.yaml").write_text(
        write_config(tmp_path / "pre.yaml", scenario, literal_weights_str="main/1:1").read_text()
    )
    assert described(step_rows_of(config, 2)[0]) == pretrained[1]


def test_an_out_dir_answers_from_its_checkpoints(scenario, tmp_path):
    fields = {"stages": STAGES}
    expected, _ = yielded(scenario, 8, **fields)
    out = tmp_path / "out"
    for step in (2, 4, 6):
        _, loader = yielded(scenario, step, **fields)
        directory = out / f"step-{step:08d}"
        directory.mkdir(parents=True)
        torch.save({"train_dataloader": loader.state_dict()}, directory / "lit_model.pth")
        write_config(directory / "hyperparameters.yaml", scenario, **fields)
    for step in (1, 3, 5, 6):
        assert described(step_rows_of(out, step)[0]) == expected[step - 1], step
    with pytest.raises(ValueError, match=r"--step 7 is past .*last checkpoint \(step 6\): give a step in 1\.\.6"):
        step_rows_of(out, 7)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--step", "0"], "--step is 0; steps count from 1"),
        (["--step", "1", "--rank", "3"], "--rank 3 is not a rank of the run; give 0..0"),
    ],
)
def test_bad_input_is_one_error_and_exit_code_2(scenario, tmp_path, capsys, argv, message):
    config = write_config(tmp_path / "run.yaml", scenario, literal_weights_str="main/1:1")
    assert main(["batch", str(config), *argv]) == 2
    assert message in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["batch", str(tmp_path / "empty"), "--step", "1"]) == 2
    assert "holds no step-*/lit_model.pth checkpoints" in capsys.readouterr().err


def test_the_json_output(scenario, tmp_path, capsys):
    config = write_config(tmp_path / "run.yaml", scenario, literal_weights_str="main/1:0.6,m1:0.4")
    assert main(["batch", str(config), "--step", "2", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["step"] == 2 and len(printed["rows"]) == GLOBAL
    keys = {"sample", "rank", "micro_batch", "row", "source", "shard", "chunk", "position", "epoch", "length"}
    assert set(printed["rows"][0]) == keys
    assert main(["batch", str(config), "--step", "2"]) == 0
    assert "step 2: 8 rows on 1 rank(s)" in capsys.readouterr().out


def test_text_decodes_the_rows_with_the_runs_tokenizer(tmp_path, capsys):
    from litgpt.tokenizer import Tokenizer

    from sharded_mix.tools.demo import train_tokenizer

    texts = ["the quick brown fox jumps over the lazy dog", "pack my box with five dozen liquor jugs"] * 20
    tokenizer_dir = train_tokenizer(texts, 300, tmp_path / "tok")
    tokenizer = Tokenizer(tokenizer_dir)
    base = tmp_path / "data"
    documents = [tokenizer.encode(text).numpy() for text in texts]
    write_token_shard(base / "main" / "1", documents)
    config = write_config(tmp_path / "run.yaml", base, literal_weights_str="main/1:1")
    assert main(["batch", str(config), "--step", "2", "--json", "--text", "--tokenizer-dir", str(tokenizer_dir)]) == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    loader = make(base, batch_size=MICRO, global_batch_size=GLOBAL, literal_weights_str="main/1:1").train_dataloader()
    blocks = [row for batch in itertools.islice(iter(loader), 4) for row in batch][GLOBAL:]
    assert [row["text"] for row in rows] == [tokenizer.decode(block) for block in blocks]


def brute_force_reads(base, steps, world, monkeypatch, **fields):
    """``{(source, position): [(step, rank, micro-batch, row), ...]}`` of every row the data module yields."""
    reads = {}
    monkeypatch.setenv("WORLD_SIZE", str(world))
    for rank in range(world):
        monkeypatch.setenv("RANK", str(rank))
        for step, rows in enumerate(yielded(base, steps, world=world, **fields)[0], start=1):
            for offset, key in enumerate(rows):
                reads.setdefault(key, []).append((step, rank, offset // MICRO, offset % MICRO))
    return reads


@pytest.mark.parametrize("world, nodes", [(1, 1), (2, 1), (2, 2)])
def test_find_lists_every_read_of_a_block_across_epochs_and_stages(scenario, tmp_path, world, nodes, monkeypatch):
    stages = [*STAGES[:2], {"name": "math", "start_step": 40, "literal_weights_str": "m1:1", "seed": 7}]
    config = write_config(tmp_path / "run.yaml", scenario, world=world, stages=stages, nodes=nodes)
    steps = 90  # m1 (181 blocks) runs through more than one epoch
    truth = brute_force_reads(scenario, steps, world, monkeypatch, stages=stages, nodes=nodes)
    m1_blocks = [key for key in truth if key[0] == "m1"]
    twice = max(m1_blocks, key=lambda key: len(truth[key]))
    assert len(truth[twice]) > 1  # read in two epochs, the second in stage math's order
    for source, position in [twice, *m1_blocks[:: len(m1_blocks) // 6], ("main/1", 0), ("main/1", BLOCK * 7 + 3)]:
        reads, first, until, _ = reads_of(config, source, position, until_step=steps)
        block_start = position - position % BLOCK
        expected = truth.get((source, block_start), [])
        assert (first, until) == (1, steps)
        assert [(read.step, read.rank, read.micro_batch, read.row) for read in reads] == sorted(expected), position
        for read in reads:  # and `batch` shows the block at that step, rank and row
            rows = step_rows_of(config, read.step, ranks=[read.rank])[0]
            assert (
                rows[read.micro_batch * MICRO + read.row].source,
                rows[read.micro_batch * MICRO + read.row].position,
            ) == (source, block_start)


def test_find_bad_input(scenario, tmp_path, capsys):
    config = write_config(tmp_path / "run.yaml", scenario, literal_weights_str="main/1:1")
    assert main(["find", str(config), "--source", "m1", "--position", "0", "--until-step", "3"]) == 2
    assert "--source 'm1' is not read by the run; its sources are main/1" in capsys.readouterr().err
    assert main(["find", str(config), "--source", "main/1", "--position", "10000000", "--until-step", "3"]) == 2
    assert "--position 10,000,000 is past the shard's" in capsys.readouterr().err
    assert main(["find", str(config), "--source", "main/1", "--position", "0"]) == 2
    assert "sets no train.max_tokens: give --until-step" in capsys.readouterr().err
    assert main(["find", str(config), "--source", "main/1", "--position", "0", "--until-step", "150", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)  # main/1's 1,206 blocks, 8 a step: each read once by step 150
    assert printed["steps"] == [1, 150] and len(printed["reads"]) == 1 and printed["reads"][0]["epoch"] == 0
