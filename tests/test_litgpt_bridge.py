"""The bridge's data-metrics hooks, in-process: what it changes in LitGPT's loop, and what it does when the loop is
not the one it knows (one WARNING; the counts stay when only the loss call differs)."""

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


class Recorder:
    """Stands in for the data module: what the bridge would call, with the loader's last rows."""

    def __init__(self) -> None:
        self.rows = []

    def add_row_losses(self, loss_sums, tokens) -> None:
        self.rows.append((loss_sums.tolist(), tokens.tolist()))

    def values(self, all_reduce) -> dict:
        return {"data/samples/a": 3}


def connect_from_litgpt(metrics) -> Fabric:
    """Call the bridge as ``litgpt pretrain`` reaches it: with ``fabric`` and ``train`` among its callers' locals."""
    fabric = Fabric(accelerator="cpu", devices=1)
    train = TrainArgs()  # noqa: F841  (read from this frame by the bridge)
    litgpt_bridge.attach_data_metrics(metrics)
    return fabric


@pytest.fixture
def loop(monkeypatch):
    """LitGPT's module attributes the bridge replaces, restored afterwards."""
    monkeypatch.setattr(pretrain, "fit", pretrain.fit)
    monkeypatch.setattr(pretrain, "chunked_cross_entropy", chunked_cross_entropy)
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
    assert loop.fit.__name__ == "fit_then_summarise"  # logs the summary when LitGPT's loop returns


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
