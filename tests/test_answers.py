"""One reading per answer kind: every task's parser and the `medrega eval` scoring read the same answer."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from medrega.answers import LETTERS, has_cjk, named_options, normalize_answer, trim_answer, yes_no
from medrega.data.records import detect_lang
from medrega.evaluation.scoring import score_prediction
from medrega.grounding import Grounding, TextBoxCodec
from medrega.metrics import closed_correct, map_to_option, parse_choice, parse_options
from medrega.metrics.vqa import answer_tokens
from medrega.tasks import TASKS, get_task
from medrega.tasks.classification import STYLES

SIZE = (320, 240)
MULTI = [(320, 240), (200, 300)]
LABELS = {
    "en": [
        "atelectasis", "cardiomegaly", "effusion", "infiltration", "mass", "nodule", "pneumonia", "pneumothorax",
        "consolidation", "edema", "emphysema", "fibrosis", "pleural thickening", "hernia", "fracture", "normal",
    ],
    "zh": [
        "肺不张", "心脏增大", "胸腔积液", "浸润", "肿块", "结节", "肺炎", "气胸",
        "实变", "水肿", "肺气肿", "纤维化", "胸膜增厚", "疝", "骨折", "正常",
    ],
}  # fmt: skip
# model outputs that an old reader got wrong: "negative", "非", "- no" were no in one reader only, "非常" is "very"
YES_NO_OUTPUTS = [
    ("Yes, there is.", "yes"), ("No.", "no"), ("是的", "yes"), ("不是", "no"), ("没有", "no"), ("有", "yes"),
    ("negative", "no"), ("Negative for malignancy.", "no"), ("positive", "yes"), ("None.", "no"),
    ("Yeah", "yes"), ("incorrect", "no"), ("- no", "no"), ("(Yes)", "yes"),
    ("非", "no"), ("非典型", "no"), ("非常明显", None), ("可见结节", "yes"), ("正确", "yes"), ("未见", "no"),
    ("normal", None), ("左肺", None), ("", None),
]  # fmt: skip


def line(task: str, text: str, reference: str, **extra) -> dict:
    return {"key": "k", "task": task, "text": text, "reference": reference, **extra}


def check_vqa(lang: str) -> None:
    vqa = get_task("vqa")
    for truth in (True, False):
        rec = vqa.make_record("v", "a.png", SIZE, "Is it there?" if lang == "en" else "有吗？", truth, lang, 1)
        want = "yes" if truth else "no"
        for text in (rec.answer, rec.answer.capitalize() + ".", rec.answer + "，" if lang == "zh" else rec.answer + ","):
            assert vqa.parse_answer(text, closed=True) == yes_no(text) == want, text
            assert score_prediction(line("vqa", text, rec.answer), rec)["metrics"] == {"closed_accuracy": 1.0}
    for text, want in YES_NO_OUTPUTS:
        assert vqa.parse_answer(text, closed=True) == yes_no(text) == want, text
        for gold in ("no", "否"):
            row = score_prediction(line("vqa", text, gold))
            assert row["metrics"]["closed_accuracy"] == float(want == "no") == float(closed_correct(text, gold)), text
    answer = vqa.format_answer(" Left upper lobe. " if lang == "en" else "左肺上叶。")
    rec = vqa.make_record("v", "a.png", SIZE, "Where?", answer, lang, 1)
    parsed = vqa.parse_answer(rec.answer)
    assert normalize_answer(parsed) == normalize_answer(rec.answer) and parsed == trim_answer(parsed)
    assert score_prediction(line("vqa", parsed, rec.answer), rec)["metrics"]["exact_match"] == 1.0


def check_classification(lang: str) -> None:
    cls, names = get_task("classification"), LABELS[lang]
    for style in STYLES[:3]:  # single label, every letter A-P
        for k, label in enumerate(names):
            rec = cls.make_record("c", "a.png", SIZE, label, names, lang, k, style=style, max_options=len(LETTERS))
            options = rec.meta["options"]
            letter = LETTERS[options.index(label)]
            said = f"The answer is {letter}." if lang == "en" else f"答案是{letter}"
            for text in (rec.answer, said, f"({letter})", f"{letter}: {label}", label):
                parsed = cls.parse_answer(text, options=options, style=style)
                chosen = options[LETTERS.index(parsed)] if style != "list" else parsed  # as the Assistant does
                assert chosen == map_to_option(text, options) == label, (style, text)
                if style != "list":
                    assert parsed == parse_choice(text, options)
                row = score_prediction(line("classification", text, rec.answer, prompt=rec.prompt), rec)
                assert row["pred_label"] == label and row["metrics"]["accuracy"] == 1.0, (style, text)
                if style != "list":  # without the record, the options come from the prompt
                    assert score_prediction(line("classification", text, rec.answer, prompt=rec.prompt))["pred_label"] == label
        four = names[:4]
        for text in ("E", "I don't know", f"{four[0]} or {four[1]}"):  # beyond the options, nothing, two options
            rec = cls.make_record("c", "a.png", SIZE, four[0], four, lang, 0, style=style)
            assert cls.parse_answer(text, options=rec.meta["options"], style=style) is None, text
            row = score_prediction(line("classification", text, rec.answer, prompt=rec.prompt), rec)
            assert row["pred_label"] is None and row["metrics"]["accuracy"] == 0.0, text
    rec = cls.make_record("c", "a.png", SIZE, [names[9], names[2]], names, lang, 0, style="multi_label")
    parsed = cls.parse_answer(rec.answer, options=rec.meta["options"], style="multi_label")
    assert parsed == [names[2], names[9]]
    row = score_prediction(line("classification", rec.answer, rec.answer), rec)
    assert row["pred_labels"] == parsed and row["metrics"]["exact_match"] == 1.0


def check_identification(lang: str) -> None:
    ident = get_task("identification")
    label = "Left lung" if lang == "en" else "左肺"
    rec = ident.make_record("i", "a.png", SIZE, (40, 50, 120, 200), label, lang, 2)
    for text in (rec.answer, f" {label}. ", f"<ref>{label}</ref>", label.lower()):
        parsed = ident.parse_answer(text)
        assert normalize_answer(parsed) == normalize_answer(label), text
        assert score_prediction(line("identification", text, rec.answer), rec)["metrics"]["accuracy"] == 1.0


def check_regional_cot(lang: str) -> None:
    cot = get_task("regional_cot")
    regions = [Grounding("nodule", [(40, 60, 60, 80)])]
    for answer in ("no", "The right lung.") if lang == "en" else ("否", "右肺。"):
        rec = cot.make_record("k", "a.png", SIZE, "Which lung?", regions, answer, lang, 9)
        final = rec.conversation[-1].content
        parsed = cot.parse_answer(final)
        assert normalize_answer(parsed) == normalize_answer(final) and yes_no(parsed) == yes_no(final)
        metrics = score_prediction(line("regional_cot", final, final), rec)["metrics"]
        assert metrics.get("closed_accuracy", metrics.get("exact_match")) == 1.0
    rec = cot.make_record("k", "a.png", SIZE, "Is there a nodule?", regions, "否" if lang == "zh" else "no", lang, 9)
    for text in ("Negative.", "非", "- no"):
        assert yes_no(cot.parse_answer(text)) == "no"
        assert score_prediction(line("regional_cot", text, rec.conversation[-1].content), rec)["metrics"] == {"closed_accuracy": 1.0}


def check_multi_image(lang: str) -> None:
    mi = get_task("multi_image")
    groundings = [Grounding("nodule", [(50, 60, 90, 100)], 1)]
    for answer, regions in (("It grew.", groundings), ("No.", [])) if lang == "en" else (("增大了。", groundings), ("否", [])):
        rec = mi.make_record("m", ["a.png", "b.png"], MULTI, "Has it changed?", answer, lang, 3, groundings=regions)
        parsed = mi.parse_answer(rec.answer, MULTI)
        assert parsed.text == answer and list(parsed.groundings) == list(TextBoxCodec().parse(rec.answer, MULTI))
        gt = [g.to_dict() for g in rec.groundings]
        row = score_prediction(line("multi_image", rec.answer, rec.answer, groundings=gt, gt_groundings=gt), rec)
        assert row["task"] == "multi_image/open"
        assert row["metrics"].get("closed_accuracy", row["metrics"].get("exact_match")) == 1.0
    for text in ("Negative.", "非", "- no"):
        assert yes_no(mi.parse_answer(text, MULTI).text) == "no"
        row = score_prediction(line("multi_image", text, "否" if lang == "zh" else "No."))
        assert row["metrics"]["closed_accuracy"] == 1.0, text
    prompt = "<image><image>Which is it?\n" + "".join(f"{x}: {o}\n" for x, o in zip(LETTERS, LABELS[lang]))
    options = parse_options(prompt)
    assert options == LABELS[lang]  # Med-MIM style choice with 16 options
    row = score_prediction(line("multi_image", "The answer is P", f"P: {options[-1]}", prompt=prompt))
    assert row["task"] == "multi_image/choice" and row["pred_label"] == options[-1] and row["metrics"]["accuracy"] == 1.0


def check_detection(lang: str) -> None:
    det = get_task("detection")
    groundings = [Grounding("heart" if lang == "en" else "心脏", [(100, 80, 180, 170)])]
    rec = det.make_record("d", "a.png", SIZE, groundings, lang, 3)
    parsed = det.parse_answer(rec.answer, SIZE)
    assert parsed == list(TextBoxCodec().parse(rec.answer, SIZE))
    gt = [g.to_dict() for g in rec.groundings]
    row = score_prediction(line("detection", rec.answer, rec.answer, groundings=[g.to_dict() for g in parsed], gt_groundings=gt), rec)
    assert row["metrics"]["object_f1"] == row["metrics"]["alignment_f1"] == 1.0


def check_report(lang: str) -> None:
    rep = get_task("report")
    findings, impression = ("The lungs are clear.", "Normal.") if lang == "en" else ("双肺清晰。", "未见异常。")
    rec = rep.make_record("r", "a.png", SIZE, findings, impression, lang, 4)
    row = score_prediction(line("report", rec.answer, rec.answer), rec)
    parsed = rep.parse_answer(rec.answer)
    assert row["prediction"] == row["reference"] == f"{parsed.findings} {parsed.impression}"


def check_grounded_report(lang: str) -> None:
    from medrega.tasks import GroundedSentence

    gr = get_task("grounded_report")
    sentences = [GroundedSentence([Grounding("nodule", [(40, 60, 60, 80)])], "A small nodule.")]
    rec = gr.make_record("g", "a.png", SIZE, sentences, lang, 5)
    parsed = gr.parse_answer(rec.answer, SIZE)
    assert [s.text for s in parsed.sentences] == ["A small nodule."]
    gt = [g.to_dict() for g in rec.groundings]
    row = score_prediction(line("grounded_report", rec.answer, rec.answer, groundings=[g.to_dict() for g in parsed.groundings], gt_groundings=gt), rec)
    assert row["prediction"] == row["reference"] and row["metrics"]["alignment_f1"] == 1.0


CHECKS = {
    "vqa": check_vqa,
    "classification": check_classification,
    "identification": check_identification,
    "regional_cot": check_regional_cot,
    "multi_image": check_multi_image,
    "detection": check_detection,
    "report": check_report,
    "grounded_report": check_grounded_report,
}


def test_every_task_has_an_agreement_check():
    assert set(CHECKS) == set(TASKS)


@pytest.mark.parametrize("lang", ["en", "zh"])
@pytest.mark.parametrize("name", list(CHECKS))
def test_task_parser_and_scoring_read_the_same_answer(name, lang):
    CHECKS[name](lang)


@pytest.mark.parametrize("char", ["中", "\u3400", "\u9fa5", "\uf900", "\ufa6d"])
def test_one_cjk_class_for_language_and_tokens(char):
    assert has_cjk(char) and detect_lang(f"see {char}") == "zh"
    assert answer_tokens(f"{char}{char} ct") == [char, char, "ct"]
    assert not has_cjk("left lung, 2.5 cm") and detect_lang("left lung") == "en"


@given(st.text(alphabet=st.sampled_from(list("ab .,:;!?()（）。，、“”'\"-是否左肺2.5 \n")), max_size=30))
def test_trimming_never_changes_the_comparison_key(text):
    assert normalize_answer(trim_answer(text)) == normalize_answer(text)
    assert yes_no(trim_answer(text)) == yes_no(text)


def test_named_options_longest_first_and_ambiguity():
    options = ["nodule", "pulmonary nodule", "mass"]
    assert named_options("A pulmonary nodule.", options) == [1]
    assert named_options("pulmonary nodule and nodule", options) == [0, 1]
    assert map_to_option("A pulmonary nodule.", options) == "pulmonary nodule"
    assert map_to_option("nodule or mass", options) is None


def test_parse_options_stops_after_the_last_letter():
    lines = "".join(f"{x}: option {x}\n" for x in LETTERS) + "A: once more\n"
    assert parse_options(lines) == [f"option {x}" for x in LETTERS]
