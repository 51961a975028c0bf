"""The Assistant on the tiny preset (random weights): mechanics, not answer quality."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import LogitsProcessor

from medrega.boxes import BoxError
from medrega.inference import Assistant, Result, TextStream


class _RegionBias(LogitsProcessor):
    """Make the random model open boxes and write loc tokens often."""

    def __init__(self, processor):
        tok, codec = processor.tokenizer, processor.codec
        self.start, self.end = tok.convert_tokens_to_ids(["<box>", "</box>"])
        self.locs = torch.tensor(codec.loc_token_ids(tok))

    def __call__(self, input_ids, scores):
        scores = scores.clone()
        scores[:, self.start] += 12
        scores[:, self.end] += 4
        scores[:, self.locs] += 6
        return scores


@pytest.fixture(scope="module")
def tiny():
    from medrega import presets

    return presets.build("tiny", seed=0)


@pytest.fixture(scope="module")
def assistant(tiny):
    return Assistant(*tiny, max_new_tokens=16)


@pytest.fixture(scope="module")
def boxy(tiny):
    model, processor = tiny
    return Assistant(model, processor, max_new_tokens=24, logits_processor=[_RegionBias(processor)])


@pytest.fixture(scope="module")
def scans(tmp_path_factory):
    import pydicom.data

    folder = tmp_path_factory.mktemp("scans")
    rng = np.random.default_rng(0)
    png = folder / "chest.png"
    Image.fromarray((rng.random((150, 200)) * 255).astype("uint8")).save(png)
    jpeg = folder / "knee.jpg"
    Image.fromarray((rng.random((90, 120, 3)) * 255).astype("uint8")).save(jpeg)
    return {
        "png": str(png),
        "jpeg": str(jpeg),
        "dicom": pydicom.data.get_testdata_file("CT_small.dcm"),
        "pil": Image.fromarray((rng.random((64, 100)) * 255).astype("uint8")),
        "numpy": (rng.random((80, 60)) * 4000).astype("uint16"),
    }


SIZES = {"png": (200, 150), "jpeg": (120, 90), "dicom": (128, 128), "pil": (100, 64), "numpy": (60, 80)}


def _inside(result: Result):
    assert result.groundings, result.raw_text
    for g in result.groundings:
        w, h = result.image_sizes[g.image_index]
        for x1, y1, x2, y2 in g.boxes:
            assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h


def test_detect_reads_every_input_kind_and_returns_boxes_inside_the_original_image(boxy, scans):
    kinds = list(SIZES)
    results = boxy.detect_many([scans[k] for k in kinds], ["left lung", "heart"], batch_size=len(kinds), progress=False)
    for kind, result in zip(kinds, results):
        assert result.task == "detection" and result.image_sizes == [SIZES[kind]]
        assert result.problems == []  # constrained by default
        _inside(result)
        data = json.loads(json.dumps(result.to_dict(), ensure_ascii=False))
        assert data["query"] == {"phrases": ["left lung", "heart"]} and data["image_sizes"] == [list(SIZES[kind])]
        assert "<box>" not in result.text and "<box>" in result.raw_text


def test_batched_detection_equals_one_by_one(boxy, scans):
    images = [scans["png"], scans["dicom"], scans["pil"]]
    queries = ["left lung", ["liver", "gallbladder", "spleen"], "右肺结节"]  # prompts of different lengths
    many = boxy.detect_many(images, queries, per_image=True, batch_size=3, progress=False)
    one = [boxy.detect(im, q) for im, q in zip(images, queries)]
    assert [r.raw_text for r in many] == [r.raw_text for r in one]
    assert [r.to_dict() for r in many] == [r.to_dict() for r in one]
    assert len(boxy.detect_many(images[:2], "heart", batch_size=1, progress=True)) == 2
    with pytest.raises(ValueError, match="one query per image"):
        boxy.detect_many(images, ["a", "b"], per_image=True)


def test_identify_writes_the_box_in_the_model_codec_and_labels_it(assistant, scans, monkeypatch):
    seen = []
    generate = Assistant._generate

    def spy(self, jobs, constrained, streamer=None):
        seen.extend(job.turns for job in jobs)
        return generate(self, jobs, constrained, streamer)

    monkeypatch.setattr(Assistant, "_generate", spy)
    result = assistant.identify(scans["png"], (20, 30, 120, 100), lang="zh")
    prompt = seen[0][0]["content"]
    assert "<loc_" in prompt and "[[" not in prompt and prompt.startswith("<image>")
    (g,) = assistant.codec.parse(prompt, (200, 150))
    assert g.boxes[0] == pytest.approx((20, 30, 120, 100), abs=0.2)
    assert result.groundings[0].boxes == [(20.0, 30.0, 120.0, 100.0)]
    assert result.groundings[0].phrase == (result.answer or "")
    with pytest.raises(BoxError):
        assistant.identify(scans["png"], (20, 30, 260, 100))


@pytest.mark.parametrize("call", ["report", "ask"])
def test_streaming_yields_the_text_of_the_non_streaming_call(assistant, scans, call):
    args = (scans["png"],) if call == "report" else (scans["png"], "Is there a nodule?")
    plain = getattr(assistant, call)(*args)
    stream = getattr(assistant, call)(*args, stream=True)
    assert isinstance(stream, TextStream)
    chunks = list(stream)
    assert "".join(chunks).strip() == plain.raw_text
    assert stream.result.to_dict() == plain.to_dict()


def test_report_grounded_and_chinese(boxy, scans):
    result = boxy.report(scans["dicom"], grounded=True, lang="zh")
    assert result.task == "grounded_report" and result.lang == "zh"
    _inside(result)
    assert type(result.answer).__name__ == "GroundedReport"


def test_report_many_takes_the_constraint_option(tiny, scans, monkeypatch):
    from medrega.inference import BoxConstraintLogitsProcessor

    model, processor = tiny
    seen, real = [], model.generate
    monkeypatch.setattr(model, "generate", lambda **kwargs: seen.append([type(p) for p in kwargs["logits_processor"]]) or real(**kwargs))
    reporter = Assistant(model, processor, max_new_tokens=4)
    reporter.report_many([scans["png"]], grounded=True, progress=False)
    reporter.report_many([scans["png"]], grounded=True, progress=False, constrained=False)
    assert seen == [[BoxConstraintLogitsProcessor], []]


def test_ask_several_images_boxes_carry_their_image(boxy, scans):
    result = boxy.ask([scans["png"], scans["jpeg"]], "What changed between the studies?")
    assert result.task == "multi_image" and result.image_sizes == [SIZES["png"], SIZES["jpeg"]]
    _inside(result)
    assert result.problems == []
    assert result.show(display=False).width > 2 * 300  # two panels


def test_classify_returns_one_of_the_options_or_none(assistant, scans):
    result = assistant.classify(scans["jpeg"], ["fracture", "normal", "effusion"])
    assert result.answer in (None, "fracture", "normal", "effusion")
    assert result.query["options"] == ["fracture", "normal", "effusion"]
    with pytest.raises(ValueError, match="at least 2 options"):
        assistant.classify(scans["jpeg"], ["normal"])


def test_regional_cot_answers_after_locating_regions(boxy, scans):
    result = boxy.regional_cot(scans["png"], "Which lung holds the nodule?")
    assert result.task == "regional_cot"
    _inside(result)
    first, second = result.raw_text.split("\n\n", 1)
    assert "<box>" in first


def test_from_pretrained_round_trip_and_cli(tiny, scans, tmp_path, capsys):
    import medrega
    from medrega.cli import main

    assert medrega.Assistant is Assistant
    model, processor = tiny
    model.save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")
    loaded = Assistant.from_pretrained(tmp_path / "model", max_new_tokens=8)
    original = Assistant(model, processor, max_new_tokens=8)
    assert loaded.detect(scans["png"], "heart").raw_text == original.detect(scans["png"], "heart").raw_text
    out = tmp_path / "drawing.png"
    assert main(["detect", scans["dicom"], "left lung", "--model", str(tmp_path / "model"), "--out", str(out), "--json", "--max-new-tokens", "8"]) == 0
    assert Image.open(out).size[0] >= 128
    printed = capsys.readouterr().out
    assert json.loads(printed[printed.index("{\n") :])["task"] == "detection"
    with pytest.raises(FileNotFoundError, match="not a model directory"):
        Assistant.from_pretrained(tmp_path)
