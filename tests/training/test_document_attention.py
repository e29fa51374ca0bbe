"""Document attention on tiny LitGPT models: each document of a packed row gets the logits it gets alone."""

import warnings

import pytest
import torch
from litgpt.config import Config
from litgpt.model import GPT

from sharded_mix.training import document_attention
from sharded_mix.training.attention import cross_document_targets, document_layout
from sharded_mix.training.row_losses import chunked_loss

EOS = 0
VOCAB = 96


def tiny(name: str, **overrides) -> GPT:
    torch.manual_seed(0)
    base = dict(n_layer=2, n_embd=64, n_head=4, block_size=64, vocab_size=VOCAB, padded_vocab_size=VOCAB)
    if name.startswith("Llama"):
        base.update(n_query_groups=2, intermediate_size=128)  # grouped-query attention, RoPE over the whole head
    model = GPT(Config.from_name(name, **{**base, **overrides}))
    return model.eval().float()


MODELS = ["pythia-14m", "Llama-3.2-1B"]


def documents(lengths: list[int], seed: int) -> list[torch.Tensor]:
    """Documents of the given lengths, each ending in EOS (no EOS inside)."""
    generator = torch.Generator().manual_seed(seed)
    out = []
    for length in lengths:
        body = torch.randint(1, VOCAB, (length - 1,), generator=generator)
        out.append(torch.cat([body, torch.tensor([EOS])]))
    return out


def packed_rows() -> tuple[torch.Tensor, list[list[tuple[int, torch.Tensor]]]]:
    """Two rows of 48 tokens; per row its documents (start, tokens), the last one cut by the row's end."""
    rows, layout = [], []
    for seed, lengths in ((1, [5, 9, 1, 7, 30]), (2, [1, 20, 3, 40])):
        parts, start, placed = documents(lengths, seed), 0, []
        for part in parts:
            part = part[: 48 - start]
            placed.append((start, part))
            start += len(part)
            if start == 48:
                break
        rows.append(torch.cat([part for _, part in placed]))
        layout.append(placed)
    return torch.stack(rows), layout


@pytest.mark.parametrize("backend", ["sdpa", "flex"])
@pytest.mark.parametrize("name", MODELS)
def test_each_document_of_a_packed_row_gets_its_logits_alone(name, backend):
    model = tiny(name)
    idx, layout = packed_rows()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # flex attention runs eagerly on CPU, and says so
        with document_attention(model, EOS, backend=backend):
            packed = model(idx)
        for row, placed in enumerate(layout):
            for start, tokens in placed:
                alone = model(tokens[None])[0]
                assert (packed[row, start : start + len(tokens)] - alone).abs().max().item() <= 1e-5


@pytest.mark.parametrize("name", MODELS)
def test_outside_the_block_the_model_is_unchanged(name):
    model = tiny(name)
    idx, _ = packed_rows()
    with torch.no_grad():
        before = model(idx)
        with document_attention(model, EOS):
            inside = model(idx)
        after = model(idx)
    assert torch.equal(before, after) and not torch.allclose(before, inside)
    assert not model.transformer.h[0].attn._forward_pre_hooks and not model._forward_pre_hooks
    assert "scaled_dot_product_attention" not in vars(model.transformer.h[0].attn)


def test_gradients_flow_and_kv_cache_calls_are_untouched():
    model = tiny("pythia-14m")
    idx, _ = packed_rows()
    with document_attention(model, EOS, backend="sdpa"):
        model(idx).sum().backward()
    assert all(parameter.grad is not None for parameter in model.parameters())
    model.set_kv_cache(batch_size=1)
    prompt = idx[:1, :10]
    with torch.no_grad():
        expected = model(prompt, input_pos=torch.arange(10))
        model.clear_kv_cache()
        model.set_kv_cache(batch_size=1)
        with document_attention(model, EOS):
            generated = model(prompt, input_pos=torch.arange(10))
    assert torch.equal(expected, generated)


def test_layout_positions_and_documents():
    idx = torch.tensor([[7, 0, 5, 6, 0, 0, 9], [0, 3, 3, 3, 3, 0, 2]])
    layout = document_layout(idx, eos_id=0, backend="sdpa")
    assert layout.positions.tolist() == [[0, 1, 0, 1, 2, 0, 0], [0, 0, 1, 2, 3, 4, 0]]
    assert layout.documents.tolist() == [[0, 0, 1, 1, 1, 2, 3], [0, 1, 1, 1, 1, 1, 2]]
    allowed = layout.mask[0, 0]
    assert allowed[3].tolist() == [False, False, True, True, False, False, False]
    assert cross_document_targets(idx, 0).tolist()[0] == [False, True, False, False, True, True, False]


def test_the_loss_leaves_out_each_eos_prediction_of_the_next_document():
    from litgpt.utils import chunked_cross_entropy

    logits = torch.randn(2, 7, 11)
    idx = torch.tensor([[7, 0, 5, 6, 0, 0, 9], [1, 3, 3, 3, 3, 0, 2]])
    targets = torch.randint(0, 11, (2, 7))
    left_out = cross_document_targets(idx, 0)
    loss = chunked_loss(chunked_cross_entropy, logits, targets, left_out=left_out)
    expected = torch.nn.functional.cross_entropy(logits[~left_out], targets[~left_out])
    assert torch.allclose(loss, expected)


def test_bad_input_is_refused():
    model = tiny("pythia-14m")
    with pytest.raises(ValueError, match="eos_id is None"):
        with document_attention(model, None):
            pass
    with pytest.raises(ValueError, match="backend is 'fast'"):
        with document_attention(model, EOS, backend="fast"):
            pass
    windowed = tiny("pythia-14m", sliding_window_size=8)
    with pytest.raises(ValueError, match="not one the patch knows"):
        with document_attention(windowed, EOS):
            pass
    with pytest.raises(ValueError, match="not one the patch knows"):
        with document_attention(torch.nn.Linear(2, 2), EOS):
            pass


def test_the_data_module_fields(tmp_path):
    from types import SimpleNamespace

    from conftest import write_source

    from sharded_mix import ShardedMixedDataset
    from sharded_mix.training.attention import DocumentTraining, document_training

    write_source(tmp_path / "data", "main/1", 1, 2000)
    fields = {"data_path": tmp_path / "data", "val_data_path": tmp_path / "data" / "main" / "1", "num_workers": 0}
    with pytest.raises(ValueError, match="attention is 'docs'; use causal"):
        ShardedMixedDataset(**fields, attention="docs")
    with pytest.raises(ValueError, match="eos_id is -1"):
        ShardedMixedDataset(**fields, attention="document", eos_id=-1)
    with pytest.raises(ValueError, match="no EOS token and eos_id is not set"):
        ShardedMixedDataset(**fields, attention="document").connect(SimpleNamespace(eos_id=None), 2, 16)
    assert document_training("document", None, False, SimpleNamespace(eos_id=3)) == DocumentTraining(3, False)
    assert document_training("document", 5, True, None) == DocumentTraining(5, True)
    assert document_training("causal", 5, False, None) is None
    batches = []
    for attention in ("causal", "document"):  # the data are the same: the change is the model's
        data = ShardedMixedDataset(**fields, attention=attention, eos_id=0)
        data.connect(batch_size=2, max_seq_length=16)
        data.setup()
        batches.append([batch.tolist() for _, batch in zip(range(3), data.train_dataloader())])
    assert batches[0] == batches[1]


@pytest.mark.parametrize("kind", ["adapter", "lora"])
def test_finetuning_models_get_document_attention_too(kind):
    """LoRA keeps LitGPT's attention (flex possible); the adapter's own attention gets the dense mask."""
    import importlib

    module = importlib.import_module(f"litgpt.{kind}")
    extra = {"adapter_start_layer": 0} if kind == "adapter" else {"lora_r": 4, "lora_alpha": 8, "lora_query": True}
    torch.manual_seed(0)
    config = module.Config.from_name(
        "pythia-14m", n_layer=2, n_embd=64, n_head=4, block_size=64, vocab_size=VOCAB, padded_vocab_size=VOCAB, **extra
    )
    model = module.GPT(config).eval()
    if kind == "adapter":
        for block in model.transformer.h:
            torch.nn.init.normal_(block.attn.adapter_wte.weight)
            block.attn.gating_factor.data.fill_(0.5)  # a prefix that counts
    idx, layout = packed_rows()
    with torch.no_grad():
        with document_attention(model, EOS):
            packed = model(idx)
        for row, placed in enumerate(layout):
            for start, tokens in placed:
                alone = model(tokens[None])[0]
                assert (packed[row, start : start + len(tokens)] - alone).abs().max().item() <= 1e-5
