"""Prompt profiles (:mod:`medrega.tasks.profiles`): the ``"medrega"`` profile reproduces, character for character,
every prompt of MedRegA's released demo records (the ``medrega-demo`` fixture, English and Chinese); the
``"default"`` profile is the task library's seeded wording; the Assistant sends the profile it is given, or the
model config's."""

import json

import numpy as np
import pytest

import medrega
from medrega import presets
from medrega.grounding import ParseResult, TextBoxCodec
from medrega.inference import assistant as assistant_module
from medrega.processing import Decoded
from medrega.tasks import get_task
from medrega.tasks.profiles import MEDREGA_COMPOSED, PROFILES, PromptProfile, get_profile

pytestmark = pytest.mark.usefixtures("one_thread")


def _pixels(box, size):  # a 0..999 box of the record back in pixels
    return [v * s / 999 for v, s in zip(box, (*size, *size))]


# the inputs of each demo record (its "id"), as the Assistant would call the profile
CASES = {
    0: lambda p: p.vqa("What does this image show?", "en"),
    1: lambda p: p.vqa("What is present?", "en"),
    2: lambda p: p.vqa("图像里包含的区域属于身体哪个部分?", "zh"),
    3: lambda p: p.vqa("这张图片的成像方式是什么?", "zh"),
    4: lambda p: p.report("en"),
    5: lambda p: p.report("zh"),
    6: lambda p: p.classification(["normal", "drusen", "diabetic macular edema", "choroidal neovascularization"], "en", modality="OCT"),
    7: lambda p: p.identification(_pixels((421, 351, 505, 470), (512, 512)), (512, 512), "en", modality="CT", codec=TextBoxCodec(999)),
    8: lambda p: p.detection("carotid vessel wall", "en", modality="MRI", codec=TextBoxCodec(999)),
    9: lambda p: p.grounded_report("en", phrases=["right lung", "left lung"], codec=TextBoxCodec(999)),
    10: lambda p: p.grounded_report("zh", phrases=["胰腺癌"], codec=TextBoxCodec(999)),
}


@pytest.fixture(scope="module")
def demo_records(fixtures_dir):
    lines = (fixtures_dir / "medrega-demo" / "data_file.jsonl").read_text(encoding="utf-8").splitlines()
    return {r["id"]: r for r in map(json.loads, lines)}


def test_every_demo_record_is_covered(demo_records):
    assert sorted(demo_records) == sorted(CASES)


@pytest.mark.parametrize("record_id", sorted(CASES))
def test_medrega_profile_reproduces_the_release_prompts(demo_records, record_id):
    expected = demo_records[record_id]["conversations"][0]["value"]
    assert CASES[record_id](get_profile("medrega")) == expected


def test_region_range_follows_the_codec():
    p = get_profile("medrega")
    assert "from 0 to 999." in p.detection("liver", "en")  # MedRegA's scale without a codec
    assert "from 0 to 1000." in p.detection("liver", "en", codec=TextBoxCodec(1000))
    assert "整数范围从0到999。" in p.detection("肝脏", "zh", codec=medrega.LocTokenCodec(1000))


def test_composed_pieces_are_named_and_both_languages_work():
    p = get_profile("medrega")
    assert ("detection", "zh") in MEDREGA_COMPOSED and ("vqa", "zh") not in MEDREGA_COMPOSED
    for lang in ("en", "zh"):
        assert p.identification((1, 2, 30, 40), (64, 64), lang).count("<image>") == 1
        assert p.classification(["a", "b"], lang).count("<image>") == 1
        assert p.grounded_report(lang).count("<image>") == 1
        assert p.ask("why?", lang, n_images=2) == get_profile("default").ask("why?", lang, n_images=2)  # no MedRegA wording


def test_default_profile_is_the_task_library_with_seed_0():
    d = get_profile(None)
    assert d is PROFILES["default"] and isinstance(get_profile(d), PromptProfile)
    assert d.detection(["liver", "nodule"], "zh", modality="CT") == get_task("detection").build_prompt(["liver", "nodule"], "zh", 0, modality="CT")
    assert d.report("en") == get_task("report").build_prompt("en", 0)
    assert d.classification(["a", "b"], "en") == get_task("classification").build_prompt(["a", "b"], "en", 0, style="choice")
    with pytest.raises(KeyError, match="known: default, medrega"):
        get_profile("llava")


@pytest.fixture(scope="module")
def tiny():
    return presets.build("tiny", region_codec={"type": "text", "scale": 999}, hidden_size=32, num_hidden_layers=1)


@pytest.fixture
def sent(monkeypatch):
    """The conversations the Assistant generates for, with a fixed answer per call."""
    calls = {"turns": [], "answer": "drusen"}

    def fake(model, processor, turns, images, **kwargs):
        calls["turns"] += turns
        return [Decoded(calls["answer"], calls["answer"], ParseResult()) for _ in turns]

    monkeypatch.setattr(assistant_module, "generate_answers", fake)
    return calls


def test_assistant_sends_the_profile_prompts(tiny, sent):
    model, processor = tiny
    image = np.zeros((48, 64, 3), dtype=np.uint8)
    a = medrega.Assistant(model, processor, prompt_profile="medrega")
    p = get_profile("medrega")
    a.detect(image, "carotid vessel wall")
    a.identify(image, (10, 10, 40, 30), lang="zh")
    a.report(image, lang="zh")
    a.report(image, grounded=True)
    a.ask(image, "What is present?")
    chosen = a.classify(image, ["normal", "drusen"])
    expected = [
        p.detection("carotid vessel wall", "en", codec=a.codec),
        p.identification((10, 10, 40, 30), (64, 48), "zh", codec=a.codec),
        p.report("zh"),
        p.grounded_report("en", codec=a.codec),
        p.ask("What is present?", "en"),
        p.classification(["normal", "drusen"], "en"),
    ]
    assert [t[0]["content"] for t in sent["turns"]] == expected
    assert chosen.answer == "drusen"  # MedRegA answers the label itself (the "list" style)


def test_assistant_defaults_to_the_config_profile_then_default(tiny, sent, tmp_path):
    model, processor = tiny
    image = np.zeros((48, 64, 3), dtype=np.uint8)
    assert medrega.Assistant(model, processor).prompt_profile.name == "default"
    medrega.Assistant(model, processor).detect(image, "liver")
    assert sent["turns"][-1][0]["content"] == get_task("detection").build_prompt("liver", "en", 0)  # as before profiles
    model.config.prompt_profile = "medrega"
    try:
        model.save_pretrained(tmp_path)
        processor.save_pretrained(tmp_path)
    finally:
        del model.config.prompt_profile
    assert medrega.Assistant.from_pretrained(tmp_path).prompt_profile.name == "medrega"
    assert medrega.Assistant.from_pretrained(tmp_path, prompt_profile="default").prompt_profile.name == "default"
