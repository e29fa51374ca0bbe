"""The SFT token cache: cached examples are LitGPT's ``SFTDataset`` examples; entries are reused, keyed, rebuilt
when damaged, built once per key, and the same from any number of worker processes."""

from __future__ import annotations

import json
import logging
import pickle
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from litgpt.data import SFTDataset
from litgpt.prompts import Alpaca, PromptStyle
from litgpt.tokenizer import Tokenizer
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import processors

from sharded_mix import SFTMixture
from sharded_mix.streaming import sft_cache, sft_tokenize
from sharded_mix.streaming.encoding import Encoder, spec_of
from sharded_mix.streaming.sft_cache import TokenCache
from sharded_mix.streaming.sft_examples import encode_task, target_tokens
from sharded_mix.streaming.sft_files import apply_template, read_records
from sharded_mix.streaming.sft_tokens import TaskRecords
from sharded_mix.tools.demo import EOS_TOKEN, train_tokenizer


def fit_length(example: dict, max_seq_length: int) -> dict:
    """``example`` cut to ``max_seq_length`` tokens, as LitGPT's ``SFTDataset`` cuts it (``raw``: at most the kept)."""
    input_ids, labels = example["input_ids"][:max_seq_length], example["labels"][:max_seq_length]
    counts = example["token_counts"]
    return {
        "input_ids": input_ids,
        "labels": labels,
        "token_counts": {"raw": min(counts["raw"], len(input_ids)), "raw_plus_prompt_template": len(input_ids)},
    }


WORDS = "the quick brown fox jumps over a lazy dog; add two numbers: 3 + 4 = 7. Résumé naïve café ünïcödé".split()


def write_tokenizer(directory: Path, variant: str = "plain") -> Path:
    """The demo's byte-level BPE; ``bos``: with a BOS token it adds (``add_bos_token``); ``misbehaving``: its
    processor puts BOS and EOS around every text though ``add_bos_token`` is off; ``bos_is_eos``: BOS is EOS."""
    corpus = [" ".join(WORDS[i % 7 :] + WORDS[: i % 5]) for i in range(200)]
    train_tokenizer(corpus, 300, directory)
    config_path = directory / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    if variant in ("bos", "misbehaving"):
        processor = HFTokenizer.from_file(str(directory / "tokenizer.json"))
        processor.add_special_tokens(["<s>"])
        if variant == "misbehaving":
            ids = [("<s>", processor.token_to_id("<s>")), (EOS_TOKEN, processor.token_to_id(EOS_TOKEN))]
            processor.post_processor = processors.TemplateProcessing(single=f"<s> $A {EOS_TOKEN}", special_tokens=ids)
        processor.save(str(directory / "tokenizer.json"))
        config.update(bos_token="<s>", add_bos_token=variant == "bos")
    elif variant == "bos_is_eos":
        config.update(bos_token=EOS_TOKEN, add_bos_token=True)
    config_path.write_text(json.dumps(config))
    return directory


VARIANTS = ("plain", "bos", "misbehaving", "bos_is_eos")


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory) -> dict[str, Tokenizer]:
    return {variant: Tokenizer(write_tokenizer(tmp_path_factory.mktemp(variant), variant)) for variant in VARIANTS}


def alpaca_records(count: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)

    def text(low: int, high: int) -> str:
        return " ".join(rng.choice(WORDS, size=int(rng.integers(low, high))))

    records = [
        {"instruction": text(1, 12), "input": text(0, 8) if i % 3 else "", "output": text(0, 30)} for i in range(count)
    ]
    records[1]["output"] = ""  # the response is EOS alone
    records[2]["input"] = None
    return records


def write_records(path: Path, records: list[dict]) -> Path:
    path.write_text(json.dumps(records))
    return path


def reference(records, tokenizer, style, mask_prompt, ignore_index, max_seq_length, long_examples) -> list[dict]:
    """What ``encode_task`` gave before the cache: LitGPT's ``SFTDataset``, then the length policy."""
    dataset = SFTDataset(records, tokenizer, style, -1, mask_prompt, ignore_index)
    cut = SFTDataset(records, tokenizer, style, max_seq_length, mask_prompt, ignore_index)
    out = []
    for index in range(len(records)):
        example = dataset[index]
        if 0 < max_seq_length < len(example["input_ids"]):
            if long_examples == "drop":
                continue
            example = fit_length(example, max_seq_length)
            assert torch.equal(example["input_ids"], cut[index]["input_ids"])  # LitGPT's own cut
            assert torch.equal(example["labels"], cut[index]["labels"])
        out.append(example)
    return out


def assert_same_examples(got, expected) -> None:
    assert len(got) == len(expected)
    for index, example in enumerate(expected):
        mine = got[index]
        assert mine["input_ids"].dtype == torch.int64 and mine["labels"].dtype == torch.int64
        assert mine["input_ids"].tolist() == example["input_ids"].tolist(), index
        assert mine["labels"].tolist() == example["labels"].tolist(), index
        assert mine["token_counts"] == example["token_counts"], index


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_encoder_is_litgpt_encode_for_every_bos_and_eos(tokenizers, variant):
    tokenizer = tokenizers[variant]
    encoder = Encoder(spec_of(tokenizer, "int32"))
    texts = ["", "the fox", " Résumé café", EOS_TOKEN, f"fox {EOS_TOKEN}", "<s>", "<s> dog"]
    for bos in (None, True, False):
        for eos in (True, False):
            if bos and tokenizer.bos_id is None:  # litgpt: NotImplementedError
                with pytest.raises(ValueError, match="no BOS token"):
                    encoder.encode_flat(texts, bos, eos)
                continue
            flat, counts = encoder.encode_flat(texts, bos, eos)
            expected = [tokenizer.encode(text, bos=bos, eos=eos).tolist() for text in texts]
            assert counts.tolist() == [len(ids) for ids in expected], (bos, eos)
            assert flat.tolist() == [token for ids in expected for token in ids], (bos, eos)
            assert [ids.tolist() for ids in encoder.encode(texts, bos, eos)] == expected
    assert encoder.encode([], eos=True) == []


@pytest.mark.parametrize("variant", ["plain", "bos", "misbehaving"])
@pytest.mark.parametrize("mask_prompt", [False, True])
@pytest.mark.parametrize("max_seq_length,long_examples", [(-1, "truncate"), (24, "truncate"), (24, "drop")])
def test_cached_examples_are_litgpt_sft_examples(
    tmp_path, tokenizers, variant, mask_prompt, max_seq_length, long_examples
):
    tokenizer, records = tokenizers[variant], alpaca_records(60)
    path = write_records(tmp_path / "task.json", records)
    cache = TokenCache(tmp_path / "cache", tokenizer)
    task = encode_task("t", path, tokenizer, Alpaca(), mask_prompt, -100, max_seq_length, long_examples, cache=cache)
    expected = reference(records, tokenizer, Alpaca(), mask_prompt, -100, max_seq_length, long_examples)
    assert_same_examples(task.examples, expected)
    if max_seq_length > 0:
        assert task.truncated + task.dropped > 0  # the cut is exercised
    assert task.lengths.tolist() == [len(example["input_ids"]) for example in expected]
    assert task.target_tokens.tolist() == target_tokens(expected, -100).tolist()
    assert task.without_targets == int((target_tokens(expected, -100) == 0).sum())
    masked = [int((example["labels"] == -100).sum()) for example in expected]
    if mask_prompt:
        assert task.prompt_lengths.tolist() == masked
    kept = [records[i] for i in task.examples.indices]
    assert list(task.records) == kept and len(kept) == len(expected)


def test_templates_and_a_token_id_as_ignore_index(tmp_path, tokenizers):
    tokenizer = tokenizers["plain"]
    raw = [{"q": f"question {i} " + " ".join(WORDS[: i % 9]), "a": " ".join(WORDS[i % 5 :])} for i in range(20)]
    path = write_records(tmp_path / "task.jsonl", [])
    path.write_text("".join(json.dumps(record) + "\n" for record in raw))
    template = {"instruction": "Q: {q}", "output": "{a}"}
    records = apply_template(read_records(path), template, "t")
    labels = torch.cat(
        [example["labels"][1:] for example in reference(records, tokenizer, Alpaca(), False, -100, 40, "")]
    )
    common = int(torch.mode(labels).values)  # as ignore_index: labels equal to it are not targets
    cache = TokenCache(tmp_path / "cache", tokenizer)
    task = encode_task("t", path, tokenizer, Alpaca(), False, common, 40, "truncate", template, cache=cache)
    expected = reference(records, tokenizer, Alpaca(), False, common, 40, "truncate")
    assert_same_examples(task.examples, expected)
    assert task.target_tokens.tolist() == target_tokens(expected, common).tolist()
    assert task.target_tokens.sum() < sum(len(example["input_ids"]) - 1 for example in expected)


def test_a_second_setup_reuses_the_cache_and_another_max_seq_length_too(tmp_path, tokenizers, monkeypatch):
    tokenizer = tokenizers["plain"]
    train = write_records(tmp_path / "train.json", alpaca_records(30, seed=1))
    val = write_records(tmp_path / "val.json", alpaca_records(5, seed=2))

    def setup(max_seq_length: int) -> SFTMixture:
        data = SFTMixture(train_data=str(train), val_data=str(val), num_workers=0, token_cache=str(tmp_path / "c"))
        data.connect(tokenizer, batch_size=4, max_seq_length=max_seq_length)
        data.setup()
        return data

    first = setup(64)

    def no_tokenizing(*args, **kwargs):
        raise AssertionError("tokenized again")

    monkeypatch.setattr(sft_cache, "encode_records", no_tokenizing)
    again, shorter = setup(64), setup(20)
    assert len(list((tmp_path / "c").glob("[0-9a-f]*"))) == 2  # train and val
    batch, same = next(iter(first.train_dataloader())), next(iter(again.train_dataloader()))
    assert torch.equal(batch["input_ids"], same["input_ids"]) and torch.equal(batch["labels"], same["labels"])
    assert max(shorter.tasks["train"].lengths) == 20 < max(first.tasks["train"].lengths)
    records = shorter.train_dataset.data
    assert isinstance(records, TaskRecords) and records._records is None  # training records: not read
    assert records[3] == json.loads(train.read_text())[3] and shorter.test_dataset.data[0]["output"] is not None


def test_a_changed_file_prompt_style_or_template_is_another_entry(tmp_path, tokenizers):
    tokenizer = tokenizers["plain"]
    cache = TokenCache(tmp_path / "cache", tokenizer)
    path = write_records(tmp_path / "task.json", alpaca_records(8))
    keys = {cache.key(path, Alpaca(), None)[0]}
    assert cache.key(path, Alpaca(), None)[0] in keys  # the same inputs: the same key
    for style, template in [(PromptStyle.from_name("phi-2"), None), (Alpaca(), {"output": "{output}!"})]:
        keys.add(cache.key(path, style, template)[0])
    write_records(path, alpaca_records(8, seed=5))
    keys.add(cache.key(path, Alpaca(), None)[0])
    keys.add(TokenCache(tmp_path / "cache", tokenizers["bos"]).key(path, Alpaca(), None)[0])
    assert len(keys) == 5


@pytest.mark.parametrize(
    "damage", ["flip a token", "cut the offsets", "garble meta.json", "delete a file", "delete meta.json"]
)
def test_a_damaged_entry_is_rebuilt_with_one_info_line(tmp_path, tokenizers, caplog, damage):
    tokenizer, records = tokenizers["plain"], alpaca_records(12)
    path = write_records(tmp_path / "task.json", records)
    cache = TokenCache(tmp_path / "cache", tokenizer)
    encode_task("t", path, tokenizer, Alpaca(), True, -100, cache=cache)
    (entry,) = (tmp_path / "cache").glob("[0-9a-f]*")
    if damage == "flip a token":
        data = bytearray((entry / "tokens.bin").read_bytes())
        data[5] ^= 1
        (entry / "tokens.bin").write_bytes(bytes(data))
    elif damage == "cut the offsets":
        (entry / "offsets.bin").write_bytes((entry / "offsets.bin").read_bytes()[:-8])
    elif damage == "garble meta.json":
        (entry / "meta.json").write_text("{not json")
    elif damage == "delete a file":
        (entry / "raw_counts.bin").unlink()
    else:
        (entry / "meta.json").unlink()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="sharded_mix"):
        task = encode_task("t", path, tokenizer, Alpaca(), True, -100, cache=cache)
    lines = [record.getMessage() for record in caplog.records if record.name.startswith("sharded_mix")]
    assert len(lines) == 1 and "cannot be used" in lines[0] and "again" in lines[0], lines
    assert cache.builds == 2
    assert_same_examples(task.examples, reference(records, tokenizer, Alpaca(), True, -100, -1, "truncate"))


def test_one_builder_per_key_the_others_wait_and_reuse(tmp_path, tokenizers, monkeypatch):
    tokenizer = tokenizers["bos"]
    path = write_records(tmp_path / "task.json", alpaca_records(40))
    caches = [TokenCache(tmp_path / "cache", tokenizer) for _ in range(4)]
    encode = sft_cache.encode_records
    monkeypatch.setattr(sft_cache, "encode_records", lambda *args: (threading.Event().wait(0.2), encode(*args)))
    results = [None] * len(caches)

    def load(number: int) -> None:
        results[number] = encode_task("t", path, tokenizer, Alpaca(), False, -100, cache=caches[number])

    threads = [threading.Thread(target=load, args=(number,)) for number in range(len(caches))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(cache.builds for cache in caches) == 1
    assert all(result.lengths.tolist() == results[0].lengths.tolist() for result in results)
    assert [p.name for p in (tmp_path / "cache").iterdir() if p.name.startswith(".") and p.name != ".locks"] == []


def test_two_workers_write_the_same_entry_as_one(tmp_path, tokenizers, monkeypatch):
    tokenizer = tokenizers["bos"]
    path = write_records(tmp_path / "task.json", alpaca_records(50))
    monkeypatch.setattr(sft_tokenize, "PROCESS_EXAMPLES", 10)  # 2 processes, 8 chunks of 7
    assert sft_tokenize.processes(50, 2) == 2
    entries = []
    for workers in (1, 2):
        cache = TokenCache(tmp_path / f"cache{workers}", tokenizer, workers=workers)
        task = encode_task("t", path, tokenizer, Alpaca(), True, -100, cache=cache)
        (entry,) = (tmp_path / f"cache{workers}").glob("[0-9a-f]*")
        entries.append({file.name: file.read_bytes() for file in entry.iterdir() if file.suffix == ".bin"})
        assert_same_examples(task.examples, reference(read_records(path), tokenizer, Alpaca(), True, -100, -1, "x"))
    assert entries[0] == entries[1] and len(entries[0]) == 4


def test_examples_pickle_without_their_tokens_and_read_them_back(tmp_path, tokenizers):
    tokenizer = tokenizers["plain"]
    path = write_records(tmp_path / "task.json", alpaca_records(10))
    task = encode_task("t", path, tokenizer, Alpaca(), True, -100, 30, cache=TokenCache(tmp_path / "c", tokenizer))
    assert task.examples.__getstate__()["tokens"] is None  # not the tokens: the file they are in
    copy = pickle.loads(pickle.dumps(task.examples))
    assert_same_examples(copy, [task.examples[i] for i in range(len(task.examples))])
    assert isinstance(copy.tokens, np.memmap)


def test_a_token_cache_that_cannot_be_created_is_a_value_error(tmp_path, tokenizers):
    path = write_records(tmp_path / "task.json", alpaca_records(3))
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    cache = TokenCache(blocker / "cache", tokenizers["plain"])
    with pytest.raises(ValueError, match="token_cache .*a_file/cache' cannot be created .*writable directory"):
        encode_task("t", path, tokenizers["plain"], Alpaca(), False, -100, cache=cache)
