"""Hostile input: each case once crashed or hung a run; now it is a clear error or a counted skip."""

import json
import random
from pathlib import Path

import numpy as np
import pytest
from forcing import ForceTokens
from PIL import Image

from medrega import LocTokenCodec, TextBoxCodec, presets
from medrega.data import JsonlDataset, load_records
from medrega.data import images as image_module
from medrega.data.images import ImageLoadError, load_image
from medrega.evaluation.benchmarks import BenchmarkFile, load_benchmark
from medrega.evaluation.predict import read_predictions
from medrega.grounding import Grounding, GroundingParseError
from medrega.training import DataSource, TrainConfig
from medrega.training.data import NoUsableSamplesError, TrainData
from medrega.training.distributed import DistEnv

GOOD = {"images": [], "conversation": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "ok"}], "lang": "en"}


def _with(**fields):
    return json.dumps({**GOOD, **fields})


BAD_LINES = [  # (raw line, the field its RecordError must name)
    ('{"image": "a.png", "width": 1e400, "height": 10, "conversations": [{"from": "human", "value": "<image>\\nhi"}, {"from": "gpt", "value": "ok"}]}', "width"),
    ('{"images": [], "conversation": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "ok"}], "lang": "en", "box_scale": 1e400}', "box_scale"),
    (_with(box_scale=0, conversation=[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "<ref>a</ref><box>[[1, 2, 3, 4]]</box>"}]), "box_scale"),
    (_with(images=["x.png"], image_sizes=[["a", "b"]], conversation=[{"role": "user", "content": "<image>hi"}, {"role": "assistant", "content": "ok"}]), "image_sizes[0][0]"),
    (_with(groundings=[{"phrase": "a", "boxes": [[1, 2, 3]]}]), "groundings[0].boxes[0]"),
    ('{"n": ' + "9" * 5000 + "}", "<json>"),
    ("[" * 100000, "<json>"),
]


@pytest.fixture
def hostile_file(tmp_path):
    """A BOM, the bad lines above, a non-UTF-8 line, and a good record holding U+2028 (valid JSON)."""
    good_u2028 = json.dumps({**GOOD, "conversation": [{"role": "user", "content": "a\u2028b\u0085c"}, {"role": "assistant", "content": "ok"}]}, ensure_ascii=False)
    body = "\n".join([json.dumps(GOOD)] + [line for line, _ in BAD_LINES]).encode() + b'\n{"bad": "\xff"}\n' + good_u2028.encode() + b"\n"
    path = tmp_path / "hostile.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + body)
    return path


@pytest.mark.parametrize("reader", ["load_records", "JsonlDataset"])
def test_every_loader_names_file_line_and_field_and_skips(hostile_file, reader):
    if reader == "load_records":
        loaded = load_records(hostile_file, check_images=False, on_error="skip")
        kept = list(loaded)
    else:
        loaded = JsonlDataset(hostile_file, check_images=False, on_error="skip")
        kept = [loaded[i] for i in range(len(loaded))]
    assert len(kept) == 2 and kept[1].conversation[0].content == "a\u2028b\u0085c"
    by_line = {e.line: e for e in loaded.skipped}
    for line, (_, field) in enumerate(BAD_LINES, 2):
        assert by_line[line].field == field and by_line[line].source == str(hostile_file)
    assert "not UTF-8" in by_line[len(BAD_LINES) + 2].reason
    with pytest.raises(Exception, match="width"):  # raise mode stops at the first bad line, naming it
        load_records(hostile_file, check_images=False)


def test_pixel_limit_and_empty_images_are_load_errors(tmp_path, monkeypatch):
    path = tmp_path / "big.png"
    Image.new("L", (300, 200)).save(path)
    with pytest.raises(ImageLoadError, match="over the limit of 50,000"):
        load_image(path, max_pixels=50_000)
    monkeypatch.setattr(image_module, "MAX_PIXELS", 1000)
    with pytest.raises(ImageLoadError, match="60,000 pixels is over the limit"):
        load_image(path)
    monkeypatch.setattr(image_module, "MAX_PIXELS", 10**9)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # PIL's own bomb check (2x this) is reported the same way
    with pytest.raises(ImageLoadError, match="over PIL's pixel limit"):
        load_image(path)
    with pytest.raises(ImageLoadError, match="empty image"):
        load_image(Image.new("RGB", (0, 0)))
    with pytest.raises(ImageLoadError, match="empty array"):
        load_image(np.zeros((0, 5), dtype=np.uint8))


def test_palette_dicom_without_lookup_table_is_a_load_error():
    from pydicom.data import get_testdata_file

    ds = __import__("pydicom").dcmread(get_testdata_file("CT_small.dcm"))
    ds.PhotometricInterpretation = "PALETTE COLOR"
    with pytest.raises(ImageLoadError, match="colour lookup table"):
        load_image(ds)


def test_training_stops_with_reasons_when_no_sample_can_be_used(tmp_path):
    path = tmp_path / "long.jsonl"
    long = {**GOOD, "conversation": [{"role": "user", "content": "word " * 400}, {"role": "assistant", "content": "ok"}]}
    path.write_text("\n".join(json.dumps(long) for _ in range(6)) + "\n")
    _, processor = presets.build("tiny")
    config = TrainConfig(data=(DataSource(str(path)),), output_dir=str(tmp_path / "run"), micro_batch_size=2, max_length=32, max_consecutive_skips=4)
    with pytest.raises(NoUsableSamplesError, match=r"4 samples in a row .*4 x SampleTooLongError"):
        next(TrainData(config, processor, DistEnv()).batches())
    patient = TrainConfig(data=(DataSource(str(path)),), output_dir=str(tmp_path / "run"), micro_batch_size=2, max_length=32)
    with pytest.raises(NoUsableSamplesError, match=r"a whole epoch \(6 samples\)"):
        next(TrainData(patient, processor, DistEnv()).batches())


def test_evaluation_resume_drops_torn_and_foreign_lines(tmp_path):
    path = tmp_path / "predictions.jsonl"
    lines = [json.dumps({"key": "a", "text": "左肺"}, ensure_ascii=False), '{"key": ["a"]}', '{"other": 1}', "not json"]
    torn = json.dumps({"key": "b", "text": "右肺结节"}, ensure_ascii=False).encode()[:-9]  # cut inside a character
    path.write_bytes(("\n".join(lines) + "\n").encode() + torn)
    assert list(read_predictions(path)) == ["a"]


def _soak(codec, texts: int, seed: int) -> None:
    """Random soups of the real tokenizer's vocabulary, region tags, huge numbers and unicode runs:
    ``parse`` / ``transcode`` / ``strip`` never raise, and strict mode raises exactly when there are problems."""
    _, processor = presets.build("tiny")
    vocab = list(processor.tokenizer.get_vocab())
    rng = random.Random(seed)
    specials = ["<ref>", "</ref>", "<box>", "</box>", "[[", "]]", ",", "<img_2>", "<loc_" + "9" * 5000 + ">", "<img_" + "7" * 5000 + ">", "9" * 5000, "\u2028", "结节"]
    other = TextBoxCodec(scale=1000) if isinstance(codec, LocTokenCodec) else LocTokenCodec(bins=100)
    for _ in range(texts):
        text = "".join(rng.choice(specials) if rng.random() < 0.4 else rng.choice(vocab) for _ in range(rng.randint(1, 40)))
        for sizes in ((100, 80), [(100, 80), (50, 50)]):
            result = codec.parse(text, sizes)
            for grounding in result:
                assert all(len(box) == 4 and box[0] < box[2] and box[1] < box[3] for box in grounding.boxes)
            if result.problems:
                with pytest.raises(GroundingParseError):
                    codec.parse(text, sizes, strict=True)
            else:
                codec.parse(text, sizes, strict=True)
            assert isinstance(codec.transcode(text, sizes, other), str) and isinstance(codec.strip(text), str)


@pytest.mark.parametrize("codec", [LocTokenCodec(), TextBoxCodec(scale=999)], ids=["loc", "text"])
def test_parse_never_raises_on_token_soup(codec):
    _soak(codec, texts=300, seed=0)


@pytest.mark.slow
@pytest.mark.parametrize("codec", [LocTokenCodec(), TextBoxCodec(scale=999)], ids=["loc", "text"])
def test_parse_never_raises_on_a_long_token_soup(codec):
    _soak(codec, texts=3000, seed=1)


def _write(tmp, tag):
    (tmp / "weights.bin").write_bytes(b"w")


def test_checkpoint_pointer_outside_the_run_is_ignored(tmp_path):
    from medrega.training.checkpoint import CheckpointManager

    manager = CheckpointManager(tmp_path / "ckpt")
    manager.save(1, _write, {"step": 1})
    outside = tmp_path / "elsewhere"
    (outside / "step_9").mkdir(parents=True)
    (outside / "step_9" / "COMPLETE").write_text("9")
    (tmp_path / "ckpt" / "latest").write_text("../elsewhere/step_9")
    assert manager.latest() == tmp_path / "ckpt" / "step_1"


def test_pruning_unmarks_before_deleting_and_a_full_disk_names_the_file(tmp_path, monkeypatch):
    from medrega.training import checkpoint as ckpt

    manager = ckpt.CheckpointManager(tmp_path / "ckpt", keep=1)
    manager.save(1, _write, {"step": 1})
    marked_while_deleting = []
    real_rmtree = ckpt.shutil.rmtree
    monkeypatch.setattr(ckpt.shutil, "rmtree", lambda path, **kw: (marked_while_deleting.append((Path(path) / "COMPLETE").exists()), real_rmtree(path, **kw)))
    manager.save(2, _write, {"step": 2})
    assert marked_while_deleting and not any(marked_while_deleting)
    monkeypatch.setattr(ckpt.shutil, "rmtree", real_rmtree)

    def full_disk(tmp, tag):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 4160 vs 4054")

    with pytest.raises(ckpt.CheckpointWriteError, match=r"step_3 could not be written to .*step_3\.tmp: the disk is full.*step_2 stays valid"):
        manager.save(3, full_disk, {"step": 3})
    assert manager.latest().name == "step_2"


def test_a_resumed_run_does_not_log_a_step_twice(tmp_path):
    from medrega.training.trainer import _MetricsLog

    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "loss": 1.0}) + "\n" for s in range(1, 6)) + '{"step": 6, "lo')
    log = _MetricsLog(tmp_path, True, resumed_step=3)
    log.write({"step": 4, "loss": 0.5})
    log.close()
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4] and rows[-1]["loss"] == 0.5


def test_a_text_codec_model_answers_every_default_call():
    from medrega import Assistant

    model, processor = presets.build("tiny", region_codec={"type": "text", "scale": 1000}, hidden_size=64, num_layers=1, vision_layers=1, vision_width=64)
    assistant = Assistant(model, processor, max_new_tokens=8)
    scan = Image.new("RGB", (80, 60), (100, 100, 100))
    results = [
        assistant.detect(scan, "heart"),
        assistant.identify(scan, box=(10, 10, 40, 40)),
        assistant.classify(scan, ["normal", "nodule"]),
        assistant.ask([scan, scan], "What changed?"),
        assistant.report(scan, grounded=True),
    ]
    assert all(isinstance(r.text, str) for r in results)


@pytest.mark.parametrize("call", ["ask", "detect", "classify", "regional_cot"])
def test_user_text_holding_model_markup_is_refused(call):
    from medrega import Assistant

    model, processor = presets.build("tiny", hidden_size=64, num_layers=1, vision_layers=1, vision_width=64)
    assistant = Assistant(model, processor, max_new_tokens=4)
    scan = Image.new("RGB", (40, 40))
    calls = {
        "ask": lambda: assistant.ask(scan, "is there <image> here?"),
        "detect": lambda: assistant.detect(scan, "the <box> nodule"),
        "classify": lambda: assistant.classify(scan, ["normal", "<ref>x</ref>"]),
        "regional_cot": lambda: assistant.regional_cot(scan, "where <loc_5> is it?"),
    }
    with pytest.raises(ValueError, match="model markup"):
        calls[call]()


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"conversation": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "<ref>a</ref><box>[[1500, 900, 20, -3]]</box>"}]}, "conversation[1].content"),
        ({"conversation": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "<ref>a</ref><box>[[50, 50, 10, 10]]</box>"}]}, "conversation[1].content"),
        ({"groundings": [{"phrase": "a", "boxes": [[-5, 1, 3, 4]]}]}, "groundings"),
        ({"groundings": [{"phrase": "a", "boxes": [[float("nan"), 1, 3, 4]]}]}, "groundings[0].boxes[0]"),
        ({"conversation": [{"role": "user", "content": "hi"}]}, "conversation"),
        ({"image_sizes": [[True, 5]], "images": ["x.png"], "conversation": [{"role": "user", "content": "<image>hi"}, {"role": "assistant", "content": "ok"}]}, "image_sizes[0][0]"),
        ({"box_scale": 1.5}, "box_scale"),
    ],
    ids=["out-of-range", "reversed", "negative", "nan", "no-answer", "size-true", "fractional-scale"],
)
def test_records_without_sizes_still_have_their_boxes_checked(tmp_path, fields, field):
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps({**GOOD, **fields}) + "\n")
    loaded = load_records(path, check_images=False, on_error="skip")
    assert not loaded and loaded.skipped[0].field == field


@pytest.mark.parametrize("answer", [None, 5, ["B"]])
def test_med_mat_answers_must_be_letters(tmp_path, answer):
    path = tmp_path / "mat.jsonl"
    path.write_text(json.dumps({"id": "1", "image": "x.png", "Question-choice": "Which? A. a B. b", "Answer-choice": answer}) + "\n")
    loaded = load_records(path, check_images=False, on_error="skip")
    assert not loaded and loaded.skipped[0].field == "Answer-choice"


def test_a_skipped_record_is_counted_once_however_often_it_is_drawn(tmp_path):
    path = tmp_path / "mix.jsonl"
    long = {**GOOD, "conversation": [{"role": "user", "content": "word " * 400}, {"role": "assistant", "content": "ok"}]}
    path.write_text("\n".join(json.dumps(r) for r in [long, GOOD, GOOD, GOOD]) + "\n")
    _, processor = presets.build("tiny")
    config = TrainConfig(data=(DataSource(str(path), weight=2.0),), output_dir=str(tmp_path / "run"), micro_batch_size=2, max_length=32)
    data = TrainData(config, processor, DistEnv())
    batches = data.batches()
    for _ in range(8):  # several epochs: the long record is drawn at least 4 times
        next(batches)
    assert data.skipped() == {"SampleTooLongError": 1}


def test_many_unclosed_tags_parse_and_transcode_with_every_problem_listed():
    codec = TextBoxCodec(scale=1000)
    result = codec.parse("<ref>" * 20000 + "<ref>lung</ref><box>[[10, 10, 500, 500]]</box>", (100, 100))
    assert len(result.problems) == 20000 and result[0].phrase == "lung"
    text = "<box>" * 20000 + "<ref>a</ref><box>[[10, 10, 500, 500]]</box>"
    out = codec.transcode(text, (100, 100), LocTokenCodec(bins=100))
    assert out == "<box>" * 20000 + "<ref>a</ref><box><loc_1><loc_1><loc_50><loc_50></box>"


def test_image_paths_outside_the_root_are_refused_where_confined(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    Image.new("RGB", (8, 8)).save(root / "in.png")
    Image.new("RGB", (8, 8)).save(tmp_path / "secret.png")
    turns = [{"role": "user", "content": "<image>hi"}, {"role": "assistant", "content": "ok"}]
    rows = [{**GOOD, "images": [name], "conversation": turns} for name in ("in.png", "../secret.png", str(tmp_path / "secret.png"))]
    path = root / "r.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    assert len(load_records(path)) == 3  # the library's loader reads paths as given unless asked
    confined = load_records(path, confine_images=True, on_error="skip")
    assert len(confined) == 1 and [e.field for e in confined.skipped] == ["images[0]", "images[0]"]
    samples = load_benchmark(BenchmarkFile(str(path)))  # medrega eval confines by default
    assert [s.skip is None for s in samples] == [True, False, False]
    assert "outside the image root" in samples[1].skip


def test_zero_area_boxes_are_problems_everywhere_and_tiny_boxes_keep_an_area(tmp_path):
    from medrega import Assistant

    loc = LocTokenCodec(bins=100)
    zero = "<ref>a</ref><box><loc_5><loc_5><loc_5><loc_9></box>"
    assert not loc.parse(zero, (100, 100)) and "zero-area" in loc.parse(zero, (100, 100)).problems[0]
    with pytest.raises(GroundingParseError, match="zero-area"):
        loc.parse(zero, (100, 100), strict=True)
    for codec in (loc, TextBoxCodec(scale=999)):  # a box thinner than one step still encodes with an area
        (box,) = codec.parse(codec.format([Grounding("dot", [(50.1, 50.1, 50.3, 50.2)])], (2000, 2000)), (2000, 2000))[0].boxes
        assert box[0] < box[2] and box[1] < box[3] and abs(box[0] - 50.1) < 2 * 2000 / 100
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps({**GOOD, "conversation": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "<ref>a</ref><box>[[100, 100, 100, 500]]</box>"}]}) + "\n")
    loaded = load_records(path, check_images=False, on_error="skip")
    assert not loaded and "zero-area" in loaded.skipped[0].reason
    model, processor = presets.build("tiny", hidden_size=64, num_layers=1, vision_layers=1, vision_width=64)
    ids = processor.tokenizer(zero, add_special_tokens=False)["input_ids"]
    force = ForceTokens(ids, processor.tokenizer.eos_token_id)
    assistant = Assistant(model, processor, max_new_tokens=len(ids) + 4, logits_processor=[force])
    result = assistant.regional_cot(Image.new("RGB", (100, 100)), "Is there a nodule?", constrained=False)
    assert zero in result.raw_text and not result.groundings and any("zero-area" in p for p in result.problems)


_FORMATS = {
    "medrega": {**GOOD, "images": ["a.png"], "conversation": [{"role": "user", "content": "<image>hi"}, {"role": "assistant", "content": "ok"}], "meta": {}, "task": "vqa"},
    "llava": {"image": "a.png", "conversations": [{"from": "human", "value": "<image>hi"}, {"from": "gpt", "value": "ok"}]},
    "medmat": {"image": "a.png", "Question-choice": "Q? A. x B. y", "Answer-choice": "A"},
}


@pytest.mark.parametrize("fmt", sorted(_FORMATS))
def test_a_wrongly_typed_field_is_named_with_what_was_expected(tmp_path, fmt):
    base = _FORMATS[fmt]
    lines = [json.dumps({**base, key: value}) for key in base for value in (None, 7, "text", [1], [None], {"a": 1}) if value != base[key]]
    path = tmp_path / "typed.jsonl"
    path.write_text("\n".join(lines) + "\n")
    loaded = load_records(path, fmt, check_images=False, on_error="skip")
    vague = [str(e) for e in loaded.skipped if e.field == "<record>" or "has no attribute" in e.reason]
    assert not vague and len(loaded) + len(loaded.skipped) == len(lines)
