"""The bridge's data-metrics hooks, in-process: what it changes in LitGPT's loop, and what it does when the loop is
not the one it knows (one WARNING; the counts stay when only the loss call differs)."""

import functools
import inspect
import logging
from types import SimpleNamespace

import litgpt.pretrain as pretrain
import pytest
import torch
from lightning.fabric import Fabric
from litgpt.args import TrainArgs
from litgpt.utils import chunked_cross_entropy

from sharded_mix import litgpt_bridge
from sharded_mix.training.data_metrics import DataMetrics
from sharded_mix.training.row_losses import chunked_loss


class Recorder:
    """Stands in for the data module: what the bridge would call, with the loader's last rows."""

    def __init__(self) -> None:
        self.rows = []

    def add_token_losses(self, losses, targets) -> None:
        self.rows.append((losses.sum(1).tolist(), targets.sum(1).tolist()))

    def values(self, all_reduce) -> dict:
        return {"data/samples/a": 3}


def connect_from_litgpt(metrics, documents=None) -> Fabric:
    """Call the bridge as ``litgpt pretrain`` reaches it: with ``fabric`` and ``train`` among its callers' locals."""
    fabric = Fabric(accelerator="cpu", devices=1)
    train = TrainArgs()  # noqa: F841  (read from this frame by the bridge)
    litgpt_bridge.attach_to_training_loop(metrics, documents)
    return fabric


@pytest.fixture
def loop(monkeypatch):
    """LitGPT's module attributes the bridge replaces, restored afterwards."""
    from sharded_mix.litgpt_bridge import loops

    monkeypatch.setattr(pretrain, "fit", pretrain.fit)
    monkeypatch.setattr(pretrain, "chunked_cross_entropy", chunked_cross_entropy)
    monkeypatch.setattr(loops, "_loop_hooks", dict.fromkeys(loops._loop_hooks))
    return pretrain


def test_the_expected_loop_gets_data_metrics_and_per_row_losses(loop):
    recorder = Recorder()
    fabric = connect_from_litgpt(recorder)
    sent = []
    fabric._loggers = [SimpleNamespace(log_metrics=lambda metrics, step: sent.append(metrics))]
    fabric.log_dict({"loss": 1.0, "iter": 4}, step=3)
    fabric.log_dict({"val_loss": 2.0}, step=3)
    assert sent == [{"loss": 1.0, "iter": 4, "data/samples/a": 3}, {"val_loss": 2.0}]
    logits = torch.randn(2, 5, 11, requires_grad=True)
    targets = torch.tensor([[1, 2, 3, -100, 4], [5, 6, 7, 8, 9]])
    loss = loop.chunked_cross_entropy(logits, targets)
    assert torch.equal(loss, chunked_cross_entropy(logits, targets))  # LitGPT's own operations
    ((sums, tokens),) = recorder.rows
    assert tokens == [4, 5] and sum(sums) == pytest.approx(loss.item() * 9, rel=1e-6)
    with torch.no_grad():  # validation: nothing recorded
        loop.chunked_cross_entropy(logits, targets)
    assert len(recorder.rows) == 1
    assert loop.fit.__name__ == "fit_with_hooks"  # logs the summary when LitGPT's loop returns


def test_another_loss_call_keeps_the_counts_and_warns_once(loop, caplog):
    loop.chunked_cross_entropy = lambda logits, targets: logits.sum()
    with caplog.at_level(logging.WARNING, logger="sharded_mix"):
        fabric = connect_from_litgpt(DataMetrics())
    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert len(warnings) == 1 and "data/loss is not logged, the counts are" in warnings[0]
    assert fabric.log_dict.__name__ == "log_with_data_metrics"


def test_another_loop_gets_no_data_metrics_and_one_warning(loop, caplog):
    def fit(fabric, state):  # a loop that logs otherwise
        fabric.log_dict({"loss": 0.0}, step=0)

    loop.fit = fit
    with caplog.at_level(logging.WARNING, logger="sharded_mix"):
        fabric = connect_from_litgpt(DataMetrics())
    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert len(warnings) == 1 and "no data/ metrics are logged" in warnings[0]
    assert fabric.log_dict.__name__ == "log_dict" and loop.fit is fit


def litgpt_chunks(logits: torch.Tensor) -> list[torch.Tensor]:
    """What the lora / adapter loops pass: ``model(..., lm_head_chunk_size=128)``, the last chunk cut by one."""
    chunks = list(logits.split(128, dim=1))
    chunks[-1] = chunks[-1][..., :-1, :]
    return chunks


@pytest.mark.parametrize("shape", ["pretrain", "finetune_full", "lm_head_chunks"])
def test_the_loss_with_row_losses_is_litgpts_loss_bit_for_bit(shape):
    torch.manual_seed(0)
    labels = torch.randint(0, 11, (3, 300))
    labels[0, :40], labels[2, 250:] = -100, -100  # a masked prompt, padding
    logits = torch.randn(3, 300, 11, requires_grad=True)
    if shape == "pretrain":
        call = lambda loss: loss(logits, labels)  # noqa: E731
        targets = labels
    elif shape == "finetune_full":
        call = lambda loss: loss(logits[..., :-1, :], labels[..., 1:])  # noqa: E731
        targets = labels[..., 1:]
    else:
        call = lambda loss: loss(litgpt_chunks(logits), labels[..., 1:])  # noqa: E731
        targets = labels[..., 1:]
    recorder = Recorder()
    wrapped = functools.partial(chunked_loss, chunked_cross_entropy, on_tokens=recorder.add_token_losses)
    expected = call(chunked_cross_entropy)
    (expected_grad,) = torch.autograd.grad(expected, logits)
    loss = call(wrapped)
    (grad,) = torch.autograd.grad(loss, logits)
    assert torch.equal(loss, expected) and torch.equal(grad, expected_grad)
    ((sums, tokens),) = recorder.rows
    scored = logits[:, : targets.size(1)].detach()
    per_row = [torch.nn.functional.cross_entropy(scored[row], targets[row], reduction="sum").item() for row in range(3)]
    assert tokens == (targets != -100).sum(1).tolist() and sums == pytest.approx(per_row, rel=1e-5)


FINETUNE_LOOPS = ["full", "lora", "adapter", "adapter_v2"]


@pytest.fixture
def finetune(request, monkeypatch, tmp_path):
    """A LitGPT finetune module (its attributes the bridge replaces restored afterwards) and an SFTMixture."""
    import importlib
    import json

    from litgpt.tokenizer import Tokenizer

    from sharded_mix import SFTMixture
    from sharded_mix.tools.demo import train_tokenizer

    loop = importlib.import_module(f"litgpt.finetune.{request.param}")
    monkeypatch.setattr(loop, "fit", loop.fit)
    monkeypatch.setattr(loop, "chunked_cross_entropy", chunked_cross_entropy)
    monkeypatch.setattr(loop, "get_longest_seq_length", loop.get_longest_seq_length)
    texts = ["Below is an instruction that describes a task. ### Instruction: ### Response:", "math chat"] * 20
    tokenizer = Tokenizer(train_tokenizer(texts, 300, tmp_path / "tok"))
    files = {}
    for name in ("math", "chat"):
        (tmp_path / f"{name}.json").write_text(
            json.dumps([{"instruction": f"{name} {i}", "output": "x"} for i in range(5)])
        )
        files[name] = str(tmp_path / f"{name}.json")
    data = SFTMixture(train_data=files, val_data=files["math"], weights="math:0.25,chat:0.75", num_workers=0)
    return loop, data, tokenizer


@pytest.mark.parametrize("finetune", FINETUNE_LOOPS, indirect=True)
def test_finetune_loops_get_per_task_metrics_and_losses(finetune):
    loop, data, tokenizer = finetune
    fabric = Fabric(accelerator="cpu", devices=1)
    train = TrainArgs(global_batch_size=4, micro_batch_size=4, max_seq_length=300)
    train_loader, val_loader = loop.get_dataloaders(fabric, data, tokenizer, train)  # connects the data module
    assert data.data_metrics is not None and loop.fit.__name__ == "fit_with_hooks"
    sent = []
    fabric._loggers = [SimpleNamespace(log_metrics=lambda metrics, step: sent.append(metrics))]
    batch = next(iter(train_loader))
    assert set(batch) == {"input_ids", "labels", "token_counts"}  # LitGPT's batch, as without the metrics
    logits = torch.randn(*batch["input_ids"].shape, 300, requires_grad=True)
    if loop.__name__.endswith("full"):
        loss = loop.chunked_cross_entropy(logits[..., :-1, :], batch["labels"][..., 1:])
        assert torch.equal(loss, chunked_cross_entropy(logits[..., :-1, :], batch["labels"][..., 1:]))
    else:
        loss = loop.chunked_cross_entropy(litgpt_chunks(logits), batch["labels"][..., 1:])
        assert torch.equal(loss, chunked_cross_entropy(litgpt_chunks(logits), batch["labels"][..., 1:]))
    with torch.no_grad():  # validate: chunk_size=0, not counted
        loop.chunked_cross_entropy(logits[..., :-1, :], next(iter(val_loader))["labels"][..., 1:], chunk_size=0)
    fabric.log_dict({"loss": loss.item(), "iter": 1}, step=1)
    fabric.log_dict(metrics={"val_loss": 2.0}, step=1)  # by name, as lightning's ThroughputMonitor calls it
    (logged, validation) = sent
    tasks = [data.epochs.example(sample)[0] for sample in range(4)]
    assert validation == {"val_loss": 2.0}
    for name in ("math", "chat"):
        assert logged[f"data/samples/{name}"] == tasks.count(name), name
        assert logged[f"data/target/{name}"] == pytest.approx(0.25 if name == "math" else 0.75)
    rows = [name for name in ("math", "chat") if name in tasks]
    targets = (batch["labels"][:, 1:] != -100).sum().item()
    weighted = sum(logged[f"data/loss/{name}"] * logged[f"data/tokens/{name}"] for name in rows)
    assert weighted == pytest.approx(loss.item() * targets, rel=1e-5)  # the step's loss, split by task


@pytest.mark.parametrize("finetune", ["lora"], indirect=True)
def test_another_finetune_loop_gets_no_data_metrics_and_one_warning(finetune, caplog):
    loop, data, tokenizer = finetune

    def fit(fabric, model):  # a loop that logs otherwise
        fabric.log_dict({"loss": 0.0})

    loop.fit = fit
    fabric = Fabric(accelerator="cpu", devices=1)
    with caplog.at_level(logging.WARNING, logger="sharded_mix"):
        loop.get_dataloaders(fabric, data, tokenizer, TrainArgs(micro_batch_size=2, max_seq_length=300))
    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert len(warnings) == 1 and "finetune_lora loop is not the expected one" in warnings[0]
    assert data.data_metrics is None and fabric.log_dict.__name__ == "log_dict" and loop.fit is fit


def test_a_finetune_loop_the_bridge_does_not_know_gets_one_warning(caplog):
    import litgpt.finetune.lora_legacy as legacy

    def get_dataloaders(fabric, train, attach, metrics):  # run in litgpt.finetune.lora_legacy's namespace
        return attach(metrics)

    unknown = type(get_dataloaders)(get_dataloaders.__code__, vars(legacy))
    fabric = Fabric(accelerator="cpu", devices=1)
    with caplog.at_level(logging.WARNING, logger="sharded_mix"):
        assert unknown(fabric, TrainArgs(), litgpt_bridge.attach_to_training_loop, DataMetrics()) is False
    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert len(warnings) == 1 and "litgpt finetune_lora_legacy is none of pretrain, finetune_full" in warnings[0]
    assert fabric.log_dict.__name__ == "log_dict"


def test_document_attention_leaves_each_eos_prediction_out_of_the_loop_loss(loop, monkeypatch):
    from litgpt import GPT, Config

    from sharded_mix.litgpt_bridge import loops
    from sharded_mix.training.attention import DocumentTraining, document_layout

    recorder = Recorder()
    connect_from_litgpt(recorder, DocumentTraining(eos_id=0))
    torch.manual_seed(0)
    model = GPT(Config.from_name("pythia-14m", n_layer=1, padded_vocab_size=64, vocab_size=64, block_size=16))
    patch = litgpt_bridge.patch_document_attention(model, functools.partial(document_layout, eos_id=0))
    monkeypatch.setitem(loops._loop_hooks, "patch", patch)
    idx = torch.tensor([[5, 0, 7, 8, 0, 9], [0, 1, 2, 3, 4, 5]])
    targets = torch.randint(1, 64, (2, 6))
    logits = model(idx)
    kept = idx != 0
    expected = torch.nn.functional.cross_entropy(logits[kept], targets[kept])
    assert torch.allclose(loop.chunked_cross_entropy(logits, targets), expected)
    assert recorder.rows[-1][1] == kept.sum(1).tolist()  # data/loss counts the same target tokens
    other = logits.detach().clone()  # not the patched model's output (e.g. LitGPT's FLOP count): nothing left out
    assert torch.equal(loop.chunked_cross_entropy(other, targets), chunked_cross_entropy(other, targets))
    patch.undo()


@pytest.mark.parametrize("packing", [False, True])
@pytest.mark.parametrize("finetune", FINETUNE_LOOPS, indirect=True)
def test_the_longest_example_is_found_from_the_lengths_without_reading_every_example(finetune, packing):
    from torch.utils.data import ConcatDataset

    loop, data, tokenizer = finetune
    data.packing = packing
    fabric = Fabric(accelerator="cpu", devices=1)  # noqa: F841  (read from this frame by the bridge)
    train = TrainArgs(global_batch_size=4, micro_batch_size=4, max_seq_length=300)
    train_loader, val_loader = loop.get_dataloaders(fabric, data, tokenizer, train)
    both = ConcatDataset([train_loader.dataset, val_loader.dataset])
    assert loop.get_longest_seq_length.__name__ == "longest_known_length"
    assert loop.get_longest_seq_length(both) == inspect.unwrap(loop.get_longest_seq_length)(both)  # LitGPT's own
