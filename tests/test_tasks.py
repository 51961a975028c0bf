import random
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medrega.answers import has_cjk
from medrega.data.records import Record
from medrega.grounding import IMAGE_TOKEN, Grounding, LocTokenCodec, TextBoxCodec
from medrega.tasks import TASKS, GroundedSentence, as_rng, get_task, ordinal

SIZE = (320, 240)
MULTI = [(320, 240), (200, 300)]
EXPECTED = [
    "identification",
    "detection",
    "grounded_report",
    "vqa",
    "report",
    "classification",
    "multi_image",
    "regional_cot",
]


def close(got, want, size, bins=1000):
    """Boxes agree within half a bin of ``bins`` per axis."""
    w, h = size
    return all(abs(g - v) <= 0.5 * s / bins + 1e-9 for g, v, s in zip(got, want, (w, h, w, h)))


def assert_groundings(parsed, expected, sizes, bins=1000):
    assert [g.phrase for g in parsed] == [g.phrase for g in expected]
    for got, want in zip(parsed, expected):
        assert got.image_index == want.image_index
        size = sizes[want.image_index] if isinstance(sizes, list) else sizes
        assert len(got.boxes) == len(want.boxes)
        assert all(close(gb, wb, size, bins) for gb, wb in zip(got.boxes, want.boxes))


def test_registry_names_and_unknown_task():
    assert list(TASKS) == EXPECTED
    assert all(get_task(name).name == name for name in EXPECTED)
    with pytest.raises(KeyError, match="known tasks: identification"):
        get_task("segmentation")


@pytest.mark.parametrize("name", EXPECTED)
def test_templates_exist_in_both_languages(name):
    task = get_task(name)
    assert task.TEMPLATES and set(task.PREAMBLES) == {"en", "zh"}
    for kind, by_lang in task.TEMPLATES.items():
        assert set(by_lang) == {"en", "zh"}, kind
        assert len(by_lang["en"]) >= 2 and len(by_lang["zh"]) >= 2, kind
        words = {lang: [re.sub(r"\{\w+\}|\s", "", t) for t in by_lang[lang]] for lang in ("en", "zh")}
        assert all(has_cjk(w) for w in words["zh"] if w), kind  # a bare "{question}" is shared
        assert any(has_cjk(w) for w in words["zh"]), kind
        assert not any(has_cjk(w) for w in words["en"]), kind
    assert has_cjk(task.PREAMBLES["zh"]) and not has_cjk(task.PREAMBLES["en"])


def test_seeded_choice_is_deterministic_and_varies():
    det = get_task("detection")
    for lang in ("en", "zh"):
        prompts = {det.build_prompt("heart", lang, seed) for seed in range(30)}
        assert len(prompts) >= 3
        assert all(
            det.build_prompt("heart", lang, s) == det.build_prompt("heart", lang, random.Random(s)) for s in range(10)
        )
    assert det.build_prompt("heart", "en", None) == det.build_prompt("heart", "en", 0)
    with pytest.raises(TypeError):
        as_rng("seed")
    with pytest.raises(ValueError, match="lang"):
        det.build_prompt("heart", "fr")


def test_prompts_open_with_image_and_optional_preamble():
    det = get_task("detection")
    plain = det.build_prompt(["left lung", "heart"], "en", 1, modality="CT")
    assert plain.startswith(IMAGE_TOKEN + "\n") and "<ref>left lung</ref>, <ref>heart</ref>" in plain
    assert "CT scan" in plain
    long = det.build_prompt(["left lung", "heart"], "en", 1, preamble=True)
    assert long.startswith(det.PREAMBLES["en"]) and long.count(IMAGE_TOKEN) == 1
    zh = det.build_prompt(["左肺", "心脏"], "zh", 1)
    assert "<ref>左肺</ref>、<ref>心脏</ref>" in zh


@pytest.mark.parametrize("lang", ["en", "zh"])
@pytest.mark.parametrize(
    "groundings",
    [
        [Grounding("left lung", [(10.3, 20.7, 150.2, 200.9)])],
        [Grounding("nodule", [(1, 2, 30, 40), (200, 100, 260, 150)])],
        [Grounding("heart", [(100, 80, 180, 170)]), Grounding("liver", [(30, 150, 160, 230), (170, 160, 200, 200)])],
    ],
    ids=["single-single", "single-multi", "multi-multi"],
)
def test_detection_round_trip_any_codec(groundings, lang):
    det = get_task("detection")
    record = det.make_record("d1", "a.png", SIZE, groundings, lang, 3)
    assert isinstance(record, Record) and record.task == "detection" and record.lang == lang
    assert record.groundings == groundings and record.image_sizes == [SIZE] and record.box_scale == 1000
    assert record.meta["objects"] == ("multi" if len(groundings) > 1 else "single")
    assert_groundings(det.parse_answer(record.answer, SIZE), groundings, SIZE)
    loc = LocTokenCodec(1000)
    assert_groundings(det.parse_answer(loc.format(groundings, SIZE), SIZE, codec=loc), groundings, SIZE)
    assert_groundings(
        det.parse_answer(TextBoxCodec(999).format(groundings, SIZE), SIZE, codec=TextBoxCodec(999)),
        groundings,
        SIZE,
        999,
    )


def test_identification_round_trip():
    ident = get_task("identification")
    record = ident.make_record("i1", "a.png", SIZE, (40, 50, 120, 200), "右肺", "zh", 2)
    assert "<box>[[125, 208, 375, 833]]</box>" in record.prompt and record.answer == "右肺"
    assert record.meta["region"] == [[40.0, 50.0, 120.0, 200.0]] and record.groundings == []
    box = TextBoxCodec(1000).parse(record.prompt, SIZE)[0].boxes[0]
    assert close(box, (40, 50, 120, 200), SIZE)
    assert ident.parse_answer("  Right lung. ") == "Right lung"
    assert ident.parse_answer("This is the left lung.", vocabulary=["lung", "left lung", "heart"]) == "left lung"
    assert ident.parse_answer("no idea", vocabulary=["heart"]) is None


@pytest.mark.parametrize("lang", ["en", "zh"])
@pytest.mark.parametrize("style", ["cxr", "ct"])
def test_grounded_report_round_trip(style, lang):
    gr = get_task("grounded_report")
    sentences = [
        GroundedSentence(
            [Grounding("right lung", [(10, 20, 100, 150)]), Grounding("left lung", [(200, 20, 300, 150)])],
            "No focal consolidation.",
        ),
        GroundedSentence([Grounding("nodule", [(40, 60, 60, 80), (220, 50, 240, 70)])], "Two small nodules."),
    ]
    impression = "Pulmonary nodules." if style == "ct" else None
    record = gr.make_record(
        "g1", "a.png", SIZE, sentences, lang, 5, style=style, impression=impression, name_phrases=True
    )
    heads = ("影像诊断：", "影像结论：") if lang == "zh" else ("Findings: ", "Impression: ")
    assert (heads[0] in record.answer and heads[1] in record.answer) == (style == "ct")
    assert "<ref>right lung</ref>" in record.prompt
    assert len(record.groundings) == 3
    native = record.answer  # the same report written by the model's native codec
    for g in record.groundings:
        native = native.replace(TextBoxCodec(1000).format_box(g.boxes, SIZE), LocTokenCodec().format_box(g.boxes, SIZE))
    for codec, text in ((TextBoxCodec(1000), record.answer), (LocTokenCodec(1000), native)):
        parsed = gr.parse_answer(text, SIZE, codec=codec)
        assert [s.text for s in parsed.sentences] == [s.text for s in sentences]
        for got, want in zip(parsed.sentences, sentences):
            assert_groundings(got.groundings, want.groundings, SIZE)
        assert parsed.impression == impression


def test_grounded_report_reads_medrega_demo_answer():
    text = "<ref>right lung</ref><box>[[102, 106, 481, 910]]</box>, <ref>left lung</ref><box>[[535, 128, 923, 889]]</box>: No focal consolidation, pleural effusion, or pneumothorax is seen. There is no evidence for pulmonary edema."
    parsed = get_task("grounded_report").parse_answer(text, (1000, 1000), codec=TextBoxCodec(999))
    assert len(parsed.sentences) == 1 and [g.phrase for g in parsed.groundings] == ["right lung", "left lung"]
    assert parsed.sentences[0].text.startswith("No focal consolidation")
    with pytest.raises(ValueError, match="impression"):
        get_task("grounded_report").format_answer(parsed.sentences, (1000, 1000), style="ct")


def test_vqa_open_and_closed():
    vqa = get_task("vqa")
    rec = vqa.make_record("v1", "a.png", SIZE, "Is the heart enlarged?", True, "en", 1)
    assert rec.answer == "yes" and rec.meta["answer_type"] == "closed"
    assert vqa.make_record("v2", "a.png", SIZE, "心脏增大吗？", False, "zh", 1).answer == "否"
    for text, want in [
        ("Yes, it is.", "yes"),
        ("no", "no"),
        ("是的", "yes"),
        ("不是", "no"),
        ("没有", "no"),
        ("有", "yes"),
        ("normal", None),
    ]:
        assert vqa.parse_answer(text, closed=True) == want, text
    assert vqa.parse_answer(" Heart. ") == "Heart"
    assert vqa.parse_answer("") is None


@pytest.mark.parametrize("lang", ["en", "zh"])
@pytest.mark.parametrize("section", ["both", "findings", "impression"])
def test_report_round_trip(section, lang):
    rep = get_task("report")
    findings, impression = (
        ("The heart is normal. The lungs are clear.", "No acute disease.")
        if lang == "en"
        else ("心脏大小正常。双肺清晰。", "未见明显异常。")
    )
    record = rep.make_record("r1", "a.png", SIZE, findings, impression, lang, 4, section=section)
    parsed = rep.parse_answer(record.answer)
    assert parsed.findings == (findings if section != "impression" else None)
    assert parsed.impression == (impression if section != "findings" else None)
    assert rep.parse_answer("FINDINGS: a. IMPRESSION: b.").impression == "b."
    assert rep.parse_answer("just text").findings == "just text"


def test_classification_med_mat_choice():
    cls = get_task("classification")
    cands = ["Stone", "Cyst", "Normal", "Tumor", "Polyp", "Mass"]
    a = cls.make_record("c1", "a.png", SIZE, "Cyst", cands, "en", 7, style="choice")
    b = cls.make_record("c1", "a.png", SIZE, "Cyst", cands, "en", 7, style="choice")
    assert a.conversation == b.conversation
    options = a.meta["options"]
    assert len(options) == 4 and "Cyst" in options and len(set(options)) == 4
    letter = "ABCD"[options.index("Cyst")]
    assert a.answer == letter and f"{letter}: Cyst" in a.prompt
    assert cls.parse_answer(a.answer, options=options) == letter
    orders = {tuple(cls.choose_options("Cyst", cands, seed)) for seed in range(20)}
    assert len(orders) > 5


def test_classification_parsers():
    cls = get_task("classification")
    opts = ["diabetic retinopathy", "glaucoma", "cataract", "normal fundus"]
    rec = cls.make_record("c2", "a.png", SIZE, "cataract", opts, "en", 1, style="choice_text", max_options=4)
    assert re.fullmatch(r"[A-D]: cataract", rec.answer)
    assert cls.parse_answer(rec.answer, options=rec.meta["options"], style="choice_text") == rec.answer[0]
    for text, want in [
        ("C", "C"),
        ("(B)", "B"),
        ("The answer is D.", "D"),
        ("答案：A", "A"),
        ("glaucoma", "B"),
        ("E", None),
        ("A nodule", None),
    ]:
        assert cls.parse_answer(text, options=opts) == want, text
    assert cls.parse_answer("cataract", options=opts, style="list") == "cataract"
    multi = cls.make_record(
        "c3", "a.png", SIZE, ["心脏增大", "肺结节"], ["肺结节", "心脏增大", "未见异常"], "zh", 1, style="multi_label"
    )
    assert multi.answer == "肺结节、心脏增大"
    assert cls.parse_answer(multi.answer, options=multi.meta["options"], style="multi_label") == ["肺结节", "心脏增大"]
    assert cls.parse_answer(
        "pulmonary nodule and nodule", options=["nodule", "pulmonary nodule"], style="multi_label"
    ) == ["nodule", "pulmonary nodule"]
    assert cls.parse_answer("a, b and c", style="multi_label") == ["a", "b", "c"]
    with pytest.raises(ValueError, match="among the options"):
        cls.format_answer("X", ["A", "B"])


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_multi_image_tags_coreference_and_groundings(lang):
    mi = get_task("multi_image")
    assert ordinal(1, "en") == "second" and ordinal(1, "zh") == "第二张"
    prompts = {
        mi.build_prompt("Where is the nodule?", 2, lang, s, ability="coreference", target_image=1) for s in range(20)
    }
    tags = "Image 1: <image>\nImage 2: <image>\n" if lang == "en" else "图1：<image>\n图2：<image>\n"
    assert all(p.startswith(tags) for p in prompts)
    assert any(
        ("In the second image, where is the nodule?" if lang == "en" else "第二张图像中，") in p for p in prompts
    )
    groundings = [Grounding("nodule", [(50, 60, 90, 100)], 1), Grounding("heart", [(10, 10, 100, 100)], 0)]
    record = mi.make_record(
        "m1", ["a.png", "b.png"], MULTI, "How has it changed?", "It grew.", lang, 3, groundings=groundings
    )
    assert "<img_2>" in record.answer and record.meta["ability"] == "temporal"
    parsed = mi.parse_answer(record.answer, MULTI)
    assert parsed.text == "It grew." and not parsed.groundings.problems
    assert_groundings(parsed.groundings, groundings, MULTI)
    bare = mi.build_prompt("Which is worse?", 3, lang, 0, ability="comparison", tagged=False)
    assert bare.startswith("<image><image><image>\n")
    with pytest.raises(ValueError, match="target_image"):
        mi.build_prompt("Where?", 2, lang, 0, ability="coreference")


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_regional_cot_two_rounds(lang):
    cot = get_task("regional_cot")
    regions = [Grounding("nodule", [(40, 60, 60, 80)]), Grounding("right lung", [(10, 20, 100, 150)])]
    record = cot.make_record(
        "k1", "a.png", SIZE, "Which lung contains the nodule?", regions, "The right lung.", lang, 9
    )
    roles = [t.role for t in record.conversation]
    assert roles == ["user", "assistant", "user", "assistant"]
    first, found, second, final = (t.content for t in record.conversation)
    assert first.startswith(IMAGE_TOKEN) and IMAGE_TOKEN not in second
    assert_groundings(cot.parse_regions(found, SIZE), regions, SIZE)
    assert_groundings(TextBoxCodec(1000).parse(second, SIZE), regions, SIZE)
    assert "Which lung contains the nodule?" in second or "which lung contains the nodule?" in second
    assert record.groundings == regions and cot.parse_answer(final) == "The right lung"


PARSERS = [
    ("identification", {}),
    ("detection", {}),
    ("grounded_report", {}),
    ("vqa", {"closed": True}),
    ("report", {}),
    ("classification", {"options": ["a", "b"]}),
    ("classification", {"style": "multi_label"}),
    ("regional_cot", {}),
]
garbage = st.one_of(
    st.text(max_size=80),
    st.lists(
        st.sampled_from(
            [
                "<ref>",
                "</ref>",
                "<box>",
                "</box>",
                "[[",
                "]]",
                "1, 2",
                "<loc_3>",
                "<img_9>",
                "Findings:",
                "影像结论：",
                "A",
                ":",
                "是",
            ]
        ),
        max_size=30,
    ).map("".join),
)


@settings(max_examples=150, deadline=None)
@given(text=garbage)
def test_parsers_never_raise_on_garbage(text):
    for name, kwargs in PARSERS:
        get_task(name).parse_answer(text, SIZE, **kwargs)
    get_task("multi_image").parse_answer(text, MULTI)
    get_task("regional_cot").parse_regions(text, SIZE, codec=LocTokenCodec())
    get_task("grounded_report").parse_answer(text, SIZE, codec=LocTokenCodec())


def test_parsers_accept_non_text():
    for name, kwargs in PARSERS:
        get_task(name).parse_answer(None, SIZE, **kwargs)
    assert get_task("multi_image").parse_answer(None, MULTI).text is None
