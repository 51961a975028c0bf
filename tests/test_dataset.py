import json
import pickle

import numpy as np
import pytest
import torch

from medrega.data import RecordError, load_records
from medrega.data.collate import pack_samples, pad_collate, plan_packing
from medrega.data.dataset import JsonlDataset, line_index
from medrega.data.mixing import MixedDataset
from medrega.data.sampling import LengthGroupedBatchSampler


def _write(path, n, extra=()):
    lines = []
    for i in range(n):
        rec = {
            "id": f"r{i}",
            "images": [f"img{i}.png"],
            "image_sizes": [[100, 80]],
            "conversation": [
                {"role": "user", "content": "<image>\nPlease locate <ref>heart</ref>."},
                {"role": "assistant", "content": f"<ref>heart</ref><box>[[{i % 500}, 100, 600, 700]]</box>"},
            ],
            "lang": "en",
            "task": "detection",
        }
        lines.append(json.dumps(rec))
    path.write_text("\n".join([*lines, *extra]) + "\n", encoding="utf-8")
    return path


# -- JsonlDataset ----------------------------------------------------------------------------------
def test_matches_load_records_on_the_demo_file(fixtures_dir):
    path = fixtures_dir / "medrega-demo" / "data_file.jsonl"
    images = fixtures_dir / "medrega-demo" / "images"
    expected = load_records(path, image_root=images, check_images=False)
    dataset = JsonlDataset(path, image_root=images)
    assert len(dataset) == len(expected)
    for i in (0, len(dataset) // 2, -1):
        got, want = dataset[i], expected[i]
        assert got.to_dict() == want.to_dict() and got.location == want.location


def test_offsets_are_numpy_and_pickled_size_is_flat(tmp_path):
    small = JsonlDataset(_write(tmp_path / "small.jsonl", 100))
    large = JsonlDataset(_write(tmp_path / "large.jsonl", 5000))
    assert isinstance(large.starts, np.ndarray) and large.starts.dtype == np.int64
    assert all(not isinstance(v, (list, dict)) or len(v) == 0 for v in vars(large).values())
    per_record = (len(pickle.dumps(large)) - len(pickle.dumps(small))) / 4900
    assert per_record <= 20  # 16 bytes of index per record, no Python objects
    assert len(pickle.dumps(load_records(tmp_path / "small.jsonl", check_images=False))) / 100 > 20 * per_record
    clone = pickle.loads(pickle.dumps(large))  # a worker: reopens the file lazily
    assert clone._fd is None and clone[4321].id == "r4321" and clone.byte_lengths[0] > 0


def test_lenient_mode_counts_bad_lines_with_locations(tmp_path):
    path = _write(tmp_path / "mixed.jsonl", 10, extra=["{not json", "   ", json.dumps({"conversation": [], "lang": "en"})])
    with pytest.raises(RecordError, match=r"mixed\.jsonl:11"):
        JsonlDataset(path)
    dataset = JsonlDataset(path, on_error="skip")
    assert len(dataset) == 10 and len(dataset.skipped) == 2
    report = dataset.report()
    assert "mixed.jsonl:11" in report and "mixed.jsonl:13" in report and "2 skipped" in report
    lazy = JsonlDataset(path, scan=False)
    assert len(lazy) == 12 and lazy[0].id == "r0"
    with pytest.raises(RecordError, match=r"mixed\.jsonl:11"):
        lazy[10]


def test_line_index_handles_blank_lines_and_no_final_newline(tmp_path):
    path = tmp_path / "f.jsonl"
    path.write_bytes(b'{"a": 1}\n\n  \n{"b": 22}')
    starts, lengths, lines = line_index(path)
    assert lines.tolist() == [1, 4]
    assert [path.read_bytes()[s : s + n] for s, n in zip(starts, lengths)] == [b'{"a": 1}', b'{"b": 22}']


# -- MixedDataset ------------------------------------------------------------------------------------
def test_mixing_fractional_repeats_are_seeded_per_epoch():
    a, b = list(range(100)), list(range(1000, 1040))
    mix = MixedDataset([(a, 0.5), (b, 2.3)], seed=7)
    assert mix.counts() == [50, 92] and len(mix) == 142
    first = [mix[i] for i in range(len(mix))]
    assert len(set(first[:50])) == 50 and set(first[:50]) <= set(a)
    assert sorted(first[50:]).count(1000) in (2, 3)
    again = MixedDataset([(a, 0.5), (b, 2.3)], seed=7)
    assert [again[i] for i in range(len(again))] == first
    mix.set_epoch(1)
    assert len(mix) == 142 and [mix[i] for i in range(len(mix))] != first
    lengths = mix.gather([np.arange(100), np.arange(40) + 1000])
    assert lengths.tolist() == [mix[i] for i in range(len(mix))]


# -- LengthGroupedBatchSampler -------------------------------------------------------------------------
def test_sampler_groups_lengths_and_covers_every_sample():
    lengths = np.random.default_rng(0).integers(10, 1000, 1000)
    sampler = LengthGroupedBatchSampler(lengths, 8, seed=3, megabatch_mult=4)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 125
    assert sorted(i for b in batches for i in b) == list(range(1000))
    assert lengths[batches[0]].max() == lengths.max()
    spread = np.mean([np.ptp(lengths[b]) for b in batches])
    random_spread = np.mean([np.ptp(lengths[b]) for b in LengthGroupedBatchSampler(lengths, 8, group_by_length=False)])
    assert spread < 0.3 * random_spread
    sampler.set_epoch(1)
    assert list(sampler) != batches


def test_sampler_is_distributed_and_resumes_exactly():
    lengths = np.random.default_rng(1).integers(1, 500, 203)
    ranks = [LengthGroupedBatchSampler(lengths, 4, world_size=3, rank=r, seed=5) for r in range(3)]
    per_rank = [list(s) for s in ranks]
    assert len({len(b) for b in per_rank}) == 1 and len(per_rank[0]) == 17  # ceil(203 / 12), padded by wrapping
    assert set(i for b in per_rank for batch in b for i in batch) == set(range(203))
    firsts = [set(b[0]) for b in per_rank]
    assert not (firsts[0] & firsts[1]) and not (firsts[1] & firsts[2])

    sampler = LengthGroupedBatchSampler(lengths, 4, world_size=3, rank=1, seed=5)
    sampler.set_epoch(2)
    full = list(sampler)
    it = iter(sampler)
    taken = [next(it) for _ in range(6)]
    state = sampler.state_dict()
    assert state["position"] == 6 and state["epoch"] == 2
    fresh = LengthGroupedBatchSampler(lengths, 4, world_size=3, rank=1, seed=5)
    fresh.load_state_dict(pickle.loads(pickle.dumps(state)))
    assert taken + list(fresh) == full
    assert list(fresh) == full  # the next pass starts the epoch over
    with pytest.raises(ValueError, match="batch_size"):
        LengthGroupedBatchSampler(lengths, 8, world_size=3, rank=1, seed=5).load_state_dict(state)
    assert sampler.state_dict(position=3)["position"] == 3


# -- collate -------------------------------------------------------------------------------------------
def _sample(n, n_img, start=1, side=4):
    ids = torch.arange(start, start + n)
    labels = torch.where(torch.arange(n) >= n // 2, ids, torch.full_like(ids, -100))
    return {"input_ids": ids, "labels": labels, "pixel_values": torch.full((n_img, 3, side, side), float(start))}


def test_pad_collate_pads_and_counts():
    samples = [_sample(5, 1, 10), _sample(3, 0, 20), _sample(7, 2, 30)]
    batch = pad_collate(samples, pad_token_id=0)
    assert batch["input_ids"].shape == (3, 7)
    assert batch["attention_mask"].sum(1).tolist() == [5, 3, 7]
    assert (batch["labels"][1, 3:] == -100).all() and batch["input_ids"][1, 3:].eq(0).all()
    assert batch["pixel_values"][:, 0, 0, 0].tolist() == [10.0, 30.0, 30.0]
    assert batch["num_tokens"] == 15 and batch["num_padding_tokens"] == 6
    left = pad_collate(samples, pad_token_id=0, padding_side="left")
    assert left["input_ids"][1, -3:].tolist() == [20, 21, 22] and left["attention_mask"][1].tolist() == [0] * 4 + [1] * 3


def test_pack_never_splits_and_restarts_positions():
    lengths = [5, 3, 7, 2, 6, 4]
    samples = [_sample(n, i % 3, 100 * (i + 1)) for i, n in enumerate(lengths)]
    for strategy in ("ffd", "sequential"):
        batch = pack_samples(samples, max_length=10, strategy=strategy)
        rows = batch["rows"]
        assert sorted(i for r in rows for i in r) == list(range(6))
        assert all(sum(lengths[i] for i in r) <= 10 for r in rows)
        for r, row in enumerate(rows):
            col = 0
            for i in row:
                n = lengths[i]
                assert batch["input_ids"][r, col : col + n].tolist() == samples[i]["input_ids"].tolist()
                assert batch["labels"][r, col : col + n].tolist() == samples[i]["labels"].tolist()
                assert batch["position_ids"][r, col : col + n].tolist() == list(range(n))
                col += n
            assert (batch["labels"][r, col:] == -100).all()
        placed = [i for r in rows for i in r for _ in range(i % 3)]
        assert batch["pixel_values"][:, 0, 0, 0].tolist() == [100.0 * (i + 1) for i in placed]
        assert batch["attention_mask"] is None
        assert batch["num_tokens"] + batch["num_padding_tokens"] == batch["input_ids"].numel()
    assert len(plan_packing(lengths, 10, "ffd")) == 3
    assert pack_samples(samples, 10)["num_padding_tokens"] < pad_collate(samples, 0)["num_padding_tokens"]
    with pytest.raises(ValueError, match="sample 2 has 7 tokens"):
        pack_samples(samples, max_length=6)


def test_packed_attention_matches_separate_samples():
    from transformers import LlamaConfig, LlamaModel

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=99, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)
    model = LlamaModel(config).eval()
    samples = [{"input_ids": torch.randint(1, 99, (n,)), "labels": torch.zeros(n, dtype=torch.long)} for n in (6, 3, 5)]
    batch = pack_samples(samples, max_length=9)
    with torch.no_grad():
        packed = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], attention_mask=None, use_cache=False).last_hidden_state
        for r, row in enumerate(batch["rows"]):
            col = 0
            for i in row:
                n = samples[i]["input_ids"].numel()
                alone = model(input_ids=samples[i]["input_ids"][None], use_cache=False).last_hidden_state[0]
                assert torch.allclose(packed[r, col : col + n], alone, atol=1e-5)
                col += n


def test_token_lengths_count_image_placeholders_not_just_bytes(tmp_path):
    wordy = {"id": "text", "images": [], "conversation": [{"role": "user", "content": "word " * 200}, {"role": "assistant", "content": "ok"}]}
    imaged = {"id": "scan", "images": ["a.png", "b.png"], "conversation": [{"role": "user", "content": "<image><image>\\nCompare."}, {"role": "assistant", "content": "ok"}]}
    path = tmp_path / "mix.jsonl"
    path.write_text(json.dumps(wordy) + "\n" + json.dumps(imaged) + "\n", encoding="utf-8")
    dataset = JsonlDataset(path)
    assert dataset.byte_lengths[0] > dataset.byte_lengths[1]
    lengths = dataset.token_lengths(tokens_per_image=256)
    assert lengths[1] > lengths[0] and lengths[1] >= 2 * 256
    assert lengths[0] == pytest.approx(dataset.byte_lengths[0] / 4, abs=1)
    with pytest.raises(ValueError, match="scan"):
        JsonlDataset(path, scan=False).token_lengths(256)
