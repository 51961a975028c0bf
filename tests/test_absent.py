"""Absent structures: a query for what the image does not contain is trained, answered "not found" in
a fixed form (English and Chinese), decoded through the box constraint, flagged on the Result, printed
by the CLI and scored."""

import json
from collections import Counter

import pytest
import torch
from forcing import ForceTokens
from PIL import Image

from medrega.answers import NOT_FOUND, not_found
from medrega.builders.phantom_records import make_phantom_dataset
from medrega.data import load_records
from medrega.data.phantoms import VOCAB, make_phantom
from medrega.evaluation import score_prediction
from medrega.grounding import Grounding, LocTokenCodec
from medrega.inference import Assistant, BoxConstraintLogitsProcessor
from medrega.tasks import get_task

SIZE = (100, 80)
LIVER = Grounding("liver", [(10.0, 40.0, 60.0, 70.0)])
ANSWERS = {
    "en": ("<ref>nodule</ref>: not found.", "nodule"),
    "zh": ("<ref>结节</ref>：未发现。", "结节"),
}


# -- the answer form ---------------------------------------------------------------------------------
@pytest.mark.parametrize("lang", ["en", "zh"])
def test_detection_writes_and_reads_the_not_found_answer(lang):
    det = get_task("detection")
    text, phrase = ANSWERS[lang]
    assert det.format_answer([], SIZE, absent=[phrase], lang=lang) == text
    parsed = det.parse_answer(text, SIZE)
    assert list(parsed) == [] and parsed.not_found == [phrase] and not parsed.problems
    liver = Grounding("liver" if lang == "en" else "肝脏", LIVER.boxes)
    mixed = det.format_answer([liver], SIZE, absent=[phrase], lang=lang)  # found first, then the absent ones
    assert mixed.startswith(f"<ref>{liver.phrase}</ref><box>[[") and mixed.endswith(", " + text)
    parsed = det.parse_answer(mixed, SIZE)
    assert [g.phrase for g in parsed] == [liver.phrase] and parsed.not_found == [phrase] and not parsed.problems
    # the loc-token codec the model writes reads the same way
    loc = LocTokenCodec(bins=100)
    native = loc.format([liver], SIZE) + ", " + text
    parsed = det.parse_answer(native, SIZE, codec=loc)
    assert [g.phrase for g in parsed] == [liver.phrase] and parsed.not_found == [phrase]
    with pytest.raises(ValueError, match="at least one grounding or one absent"):
        det.format_answer([], SIZE, lang=lang)


def test_the_reader_is_lenient_on_colon_case_and_spaces_and_reads_several():
    assert NOT_FOUND == {"en": "not found", "zh": "未发现"}
    assert not_found("Nodule : Not Found.") == ["Nodule"]
    assert not_found("结节:未发现") == ["结节"]
    assert not_found("liver, nodule: not found, lesion: not found.") == ["nodule", "lesion"]
    assert not_found("The nodule was found.") == [] and not_found("") == [] and not_found(None) == []
    parsed = get_task("detection").parse_answer("<ref>a</ref><box>[[1, 2, 3, 4]]</box>", SIZE)
    assert parsed.not_found == []


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_a_negative_record_asks_for_the_absent_structure_and_answers_not_found(lang):
    det = get_task("detection")
    text, phrase = ANSWERS[lang]
    record = det.make_record("n", "x.png", SIZE, [], lang, rng=0, absent=[phrase])
    assert f"<ref>{phrase}</ref>" in record.conversation[0].content and record.answer == text
    assert record.groundings == [] and record.meta["absent"] == [phrase] and record.meta["objects"] == "single"
    mixed = det.make_record("m", "x.png", SIZE, [LIVER], lang, rng=0, absent=[phrase])
    assert mixed.meta["objects"] == "multi" and [g.phrase for g in mixed.groundings] == ["liver"]
    prompt = mixed.conversation[0].content
    assert prompt.index("<ref>liver</ref>") < prompt.index(f"<ref>{phrase}</ref>")


# -- the phantom data --------------------------------------------------------------------------------
def test_phantom_records_hold_negatives_at_the_rate_and_only_for_absent_structures(tmp_path):
    n, rate = 150, 0.4
    path = make_phantom_dataset(tmp_path / "neg", n, seed=5, size=(64, 64), tasks=("detection",), negative_rate=rate, multi_object_rate=0.3)
    records = load_records(path)
    seeds = {r.meta["phantom_seed"] for r in records}
    phantoms = {s: make_phantom(s, (64, 64)) for s in seeds}
    eligible = [r for r in records if phantoms[r.meta["phantom_seed"]].absent()]
    negatives = [r for r in records if r.meta.get("absent")]
    assert negatives and all(r in eligible for r in negatives)
    assert abs(len(negatives) / len(eligible) - rate) < 0.08  # 0.4 of ~200 eligible records
    for r in negatives:
        ph = phantoms[r.meta["phantom_seed"]]
        (phrase,) = r.meta["absent"]
        english = phrase if r.lang == "en" else {zh: en for en, zh in VOCAB.items()}[phrase]
        assert english in ph.absent() and english not in ph.names()  # really absent from the drawing
        assert r.answer.endswith(f"<ref>{phrase}</ref>: not found." if r.lang == "en" else f"<ref>{phrase}</ref>：未发现。")
        assert all(g.phrase in (ph.names() if r.lang == "en" else [VOCAB[x] for x in ph.names()]) for g in r.groundings)
    assert Counter(r.lang for r in negatives).keys() == {"en", "zh"}
    assert any(r.groundings for r in negatives) and any(not r.groundings for r in negatives)  # mixed and pure
    assert {p for r in negatives for p in r.meta["absent"]} >= {"nodule", "lesion", "结节", "病灶"}


def test_negative_rate_zero_writes_the_same_files_as_before(tmp_path):
    default = make_phantom_dataset(tmp_path / "a", 30, seed=2, tasks=("detection",))
    zero = make_phantom_dataset(tmp_path / "b", 30, seed=2, tasks=("detection",), negative_rate=0.0)
    assert default.read_bytes() == zero.read_bytes() and "absent" not in default.read_text()
    some = make_phantom_dataset(tmp_path / "c", 30, seed=2, tasks=("detection",), negative_rate=0.5)
    kept = [a for a, b in zip(default.read_text().splitlines(), some.read_text().splitlines()) if a == b]
    assert 0 < len(kept) < 60  # negatives replace some records; the others stay byte for byte
    with pytest.raises(ValueError, match="negative_rate"):
        make_phantom_dataset(tmp_path / "d", 1, negative_rate=1.5)


# -- scoring -----------------------------------------------------------------------------------------
def _line(text, groundings, gt, reference):
    return {"task": "detection", "text": text, "groundings": [g.to_dict() for g in groundings], "gt_groundings": [g.to_dict() for g in gt], "reference": reference}


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_the_scorer_counts_not_found_right_and_a_box_on_a_negative_wrong(lang):
    text, phrase = ANSWERS[lang]
    right = score_prediction(_line(text.replace("<ref>", "").replace("</ref>", ""), [], [], text))["metrics"]
    assert right["negative_accuracy"] == 1.0 and right["object_f1"] == 1.0
    boxed = score_prediction(_line(phrase, [Grounding(phrase, [(1, 1, 9, 9)])], [], text))["metrics"]
    assert boxed["negative_accuracy"] == 0.0 and boxed["region_f1"] == 0.0
    both = f"{phrase}: not found" if lang == "en" else f"{phrase}：未发现"  # says absent but also boxes it
    assert score_prediction(_line(both, [Grounding(phrase, [(1, 1, 9, 9)])], [], text))["metrics"]["negative_accuracy"] == 0.0
    silent = score_prediction(_line("", [], [], text))["metrics"]
    assert silent["negative_accuracy"] == 0.0
    positive = score_prediction(_line("liver", [LIVER], [LIVER], "<ref>liver</ref><box>[[1, 2, 3, 4]]</box>"))["metrics"]
    assert "negative_accuracy" not in positive


def test_the_scorer_on_a_mixed_query_scores_each_part():
    ref = "<ref>liver</ref><box>[[100, 500, 600, 875]]</box>, <ref>nodule</ref>: not found."
    good = score_prediction(_line("liver, nodule: not found.", [LIVER], [LIVER], ref))["metrics"]
    assert good["negative_accuracy"] == 1.0 and good["region_f1"] == 1.0
    bad = score_prediction(_line("liver, nodule", [LIVER, Grounding("nodule", [(1, 1, 9, 9)])], [LIVER], ref))["metrics"]
    assert bad["negative_accuracy"] == 0.0 and bad["region_f1"] < 1.0


# -- decoding, the Result and the CLI ----------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny():
    from medrega import presets

    return presets.build("tiny", seed=0)


def _ids(processor, text):
    return processor.tokenizer(text, add_special_tokens=False)["input_ids"]


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_the_box_constraint_allows_every_token_of_the_not_found_answer(tiny, lang):
    _, processor = tiny
    constraint = BoxConstraintLogitsProcessor.from_processor(processor, max_length=200)
    prompt = _ids(processor, "<ref>liver</ref><box><loc_1><loc_2><loc_30><loc_40></box>, ")
    answer = _ids(processor, ANSWERS[lang][0])
    vocab = len(processor.tokenizer)
    for k, token in enumerate(answer):
        seen = torch.tensor([prompt + answer[:k]])
        assert torch.isfinite(constraint(seen, torch.zeros(1, vocab))[0, token]), (k, token)


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_detect_on_a_forced_not_found_answer_flags_it_with_no_grounding(tiny, lang):
    model, processor = tiny
    text, phrase = ANSWERS[lang]
    ids = _ids(processor, text)
    force = ForceTokens(ids, processor.tokenizer.eos_token_id)
    assistant = Assistant(model, processor, max_new_tokens=len(ids) + 4, logits_processor=[force])
    result = assistant.detect(Image.new("L", (90, 70), 80), phrase, lang=lang)  # constrained by default
    assert result.raw_text.strip() == text, result.raw_text
    assert result.groundings == [] and result.found is False and result.not_found == [phrase]
    data = result.to_dict()
    assert data["found"] is False and data["not_found"] == [phrase] and data["groundings"] == []
    assert result.show(display=False).size[0] >= 90  # the drawing of nothing found is the image


def test_detect_with_several_phrases_says_which_were_not_found(tiny):
    model, processor = tiny
    text = "<ref>liver</ref><box><loc_10><loc_20><loc_300><loc_400></box>, <ref>nodule</ref>: not found."
    ids = _ids(processor, text)
    assistant = Assistant(model, processor, max_new_tokens=len(ids) + 4, logits_processor=[ForceTokens(ids, processor.tokenizer.eos_token_id)])
    result = assistant.detect(Image.new("L", (90, 70), 80), ["liver", "nodule"])
    assert [g.phrase for g in result.groundings] == ["liver"] and result.found is True
    assert result.not_found == ["nodule"]
    ordinary = Assistant(model, processor, max_new_tokens=4).detect(Image.new("L", (90, 70), 80), "liver")
    assert ordinary.not_found == [] and ordinary.to_dict()["not_found"] == []


def test_cli_detect_json_and_text_say_not_found(tiny, tmp_path, capsys, monkeypatch):
    from medrega import cli

    model, processor = tiny
    text = ANSWERS["en"][0]
    ids = _ids(processor, text)
    image = tmp_path / "scan.png"
    Image.new("L", (90, 70), 80).save(image)

    def forced(args):
        return Assistant(model, processor, max_new_tokens=len(ids) + 4, logits_processor=[ForceTokens(ids, processor.tokenizer.eos_token_id)])

    monkeypatch.setattr(cli, "_assistant", forced)
    assert cli.main(["detect", str(image), "nodule", "--model", "unused", "--json"]) == 0
    printed = capsys.readouterr().out
    data = json.loads(printed[printed.index("{") :])
    assert data["found"] is False and data["not_found"] == ["nodule"] and data["groundings"] == []
    assert cli.main(["detect", str(image), "nodule", "--model", "unused"]) == 0
    out = capsys.readouterr()
    assert "nodule: not found." in out.out and "not found: nodule" in out.err
