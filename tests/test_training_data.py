"""TrainData: length grouping counts image tokens; skipped samples carry a structured reason."""

import json

from PIL import Image

from medrega import presets
from medrega.evaluation.runner import _skip_counts
from medrega.training import DataSource, TrainConfig
from medrega.training.data import TrainData
from medrega.training.distributed import DistEnv


def _data(tmp_path, records, **options):
    path = tmp_path / "mix.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n", encoding="utf-8")
    _, processor = presets.build("tiny")
    config = TrainConfig(data=(DataSource(str(path)),), output_dir=str(tmp_path / "run"), **options)
    return TrainData(config, processor, DistEnv()), processor


def test_the_sample_with_most_image_tokens_comes_first(tmp_path):
    names = [f"{k}.png" for k in range(6)]
    for name in names:
        Image.new("L", (40, 40)).save(tmp_path / name)
    wordy = {"id": "text", "images": [], "conversation": [{"role": "user", "content": "word " * 40}, {"role": "assistant", "content": "ok"}]}
    imaged = {"id": "scan", "images": names, "conversation": [{"role": "user", "content": "<image>" * 6 + "\nCompare."}, {"role": "assistant", "content": "ok"}]}
    assert len(json.dumps(wordy)) > len(json.dumps(imaged))  # the longer line, but fewer tokens
    data, processor = _data(tmp_path, [wordy, imaged, wordy, wordy], micro_batch_size=1, max_length=512)
    assert 6 * processor.max_image_tokens > len(json.dumps(wordy)) / 4
    first = next(iter(data._sampler()))
    assert data.mix.sample_ids[first[0]] == 1


def test_skipped_samples_carry_their_kind_apart_from_the_message(tmp_path):
    long = {"id": "long", "images": [], "conversation": [{"role": "user", "content": "word: " * 400}, {"role": "assistant", "content": "ok"}]}
    data, _ = _data(tmp_path, [long], micro_batch_size=1, max_length=32)
    kind, message = data.encoded[0]["skipped"]
    assert kind == "SampleTooLongError" and message.startswith("SampleTooLongError: ") and "mix.jsonl:1" in message


def test_evaluation_counts_skips_by_their_recorded_reason():
    lines = [{"skipped": "images[0]: lies outside the image root", "skip_reason": "images[0]"}, {"skipped": "cannot open /a: b.png", "skip_reason": "image not readable"}, {"skipped": None}]
    assert _skip_counts(lines) == {"images[0]": 1, "image not readable": 1}
