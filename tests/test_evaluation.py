"""The benchmark runner: loaders on real benchmark files, per-task scoring, and end-to-end runs with the
tiny model (random weights: mechanics and bookkeeping are tested, not answer quality)."""

import json
import runpy
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from medrega.builders.phantom_records import make_phantom_dataset
from medrega.evaluation import (
    BenchmarkFile,
    infer_task,
    load_benchmark,
    load_benchmarks,
    load_eval_config,
    run_benchmark,
    score_prediction,
)
from medrega.evaluation.predict import FIELDS, prompt_turns, read_predictions, reference_groundings
from medrega.grounding import LocTokenCodec, TextBoxCodec
from medrega.metrics import summarize

ROOT = Path(__file__).resolve().parents[1]
MED_MIM = {  # file -> (records, ability, split)
    "Med_MIM_benchmark_Held_in_Temporal.json": (933, "temporal", "held_in"),
    "Med_MIM_benchmark_Held_in_Reasoning.json": (484, "reasoning", "held_in"),
    "Med_MIM_benchmark_Held_in_Comparison.json": (344, "comparison", "held_in"),
    "Med_MIM_benchmark_Held_in_Coreference.json": (1463, "coreference", "held_in"),
    "Med_MIM_benchmark_Held_out_ODIR.json": (600, None, "held_out"),
    "Med_MIM_benchmark_Held_out_RAD.json": (366, None, "held_out"),
}
DEMO_TASKS = ["vqa", "vqa", "vqa", "vqa", "report", "report", "classification", "identification", "detection", "grounded_report", "grounded_report"]


# -- loaders on the released files -------------------------------------------------------------
def test_all_six_med_mim_files_load_with_abilities_and_splits(fixtures_dir):
    samples = load_benchmarks([fixtures_dir / "med-mim" / name for name in MED_MIM])
    assert len(samples) == 4190 and len({s.key for s in samples}) == 4190  # ids repeat, keys do not
    for name, (count, ability, split) in MED_MIM.items():
        mine = [s for s in samples if s.dataset == Path(name).stem]
        assert len(mine) == count
        assert {s.ability for s in mine} == {ability} and {s.split for s in mine} == {split}
        assert {s.task for s in mine} == {"multi_image"}
        assert all(len(s.record.images) >= 2 for s in mine)
    assert Counter(s.skip.split(":")[0] for s in samples) == {"image not found": 4190}  # images are not shipped


def test_med_mim_scoring_reads_choices_and_open_answers(fixtures_dir):
    samples = load_benchmark(fixtures_dir / "med-mim" / "Med_MIM_benchmark_Held_out_ODIR.json")
    rows = []
    for s in samples:
        line = {"key": s.key, "task": s.task, "lang": "en", "dataset": s.dataset, "prompt": s.record.prompt, "reference": s.record.answer}
        rows.append(score_prediction({**line, "text": s.record.answer}, s.record))
    assert Counter(r["task"] for r in rows) == {"multi_image/choice": 300, "multi_image/open": 300}  # as released
    table = {r["task"]: r for r in summarize(rows).rows if r["by"] == "all"}
    assert table["multi_image/choice"]["accuracy"] == 1.0 and table["multi_image/open"]["bleu4"] == 1.0
    choice = next(s for s in samples if "multichoice" in s.record.source)
    wrong = {"key": choice.key, "task": "multi_image", "dataset": "odir", "prompt": choice.record.prompt, "reference": choice.record.answer}
    other = next(letter for letter in "ABCD" if not choice.record.answer.startswith(letter))
    assert score_prediction({**wrong, "text": f"{other}: something"}, choice.record)["metrics"]["accuracy"] == 0.0


def test_medrega_demo_records_map_to_tasks_and_missing_images_are_counted(fixtures_dir):
    demo = fixtures_dir / "medrega-demo"
    samples = load_benchmark(BenchmarkFile(str(demo / "data_file.jsonl"), image_root=str(demo)))
    assert [s.task for s in samples] == DEMO_TASKS
    assert [s.record.lang for s in samples][2:6] == ["zh", "zh", "en", "zh"]
    skipped = [s for s in samples if s.skip]
    assert [Path(s.skip.split(": ")[1]).name for s in skipped] == ["demo_03.jpg", "demo_08.jpg"]
    detection = samples[8]
    gt = reference_groundings(detection.record, detection.record.image_sizes)
    assert [g.phrase for g in gt] == ["carotid vessel wall"] and len(gt[0].boxes) == 2
    assert all(0 <= v <= 432 for box in gt[0].boxes for v in box)
    identification = samples[7].record  # its question's box is rewritten into the model's loc tokens
    turns = prompt_turns(identification, identification.image_sizes, LocTokenCodec())
    assert "<box><loc_421><loc_351><loc_505><loc_470></box>" in turns[-1].content


def test_infer_task_rules():
    from medrega.data import Record, Turn

    def rec(question, answer, images=1):
        return Record("x", ["a.png"] * images, [Turn("user", "<image>" * images + question), Turn("assistant", answer)])

    assert infer_task(rec("Where is <ref>liver</ref>?", "<ref>liver</ref><box>[[1, 2, 30, 40]]</box>")) == "detection"
    assert infer_task(rec("请定位<ref>结节</ref>并描述", "<ref>结节</ref><box>[[1, 2, 30, 40]]</box>：右肺结节。")) == "grounded_report"
    assert infer_task(rec('Use the format "<box>[[x1, y1, x2, y2]]</box>". What is in <box>[[1, 2, 30, 40]]</box>?', "liver")) == "identification"
    assert infer_task(rec("Which one?\nA: cyst\nB: stone", "B")) == "classification"
    assert infer_task(rec("请为这张影像撰写诊断报告。", "影像诊断：未见异常。")) == "report"
    assert infer_task(rec("Is there a nodule?", "yes")) == "vqa"
    assert infer_task(rec("What changed?", "It grew.", images=2)) == "multi_image"


def test_med_mat_question_file_is_tagged_with_its_triplet(tmp_path, fixtures_dir):
    (tmp_path / "img").mkdir()
    Image.new("RGB", (32, 24)).save(tmp_path / "img" / "cyst.png")
    question = "Review this kidney CT scan.\nA: Stone\nB: Cyst\nC: Normal\nD: Tumor\nAnswer with the option's letter from the given choices directly."
    record = {"id": 1, "caption": "Cyst", "image": "img/cyst.png", "Question": "Review this kidney CT scan.", "Answer": "Cyst",
              "Question-choice": question, "Answer-choice": "B", "data-no": "2"}  # fmt: skip
    (tmp_path / "test.json").write_text(json.dumps([record, {**record, "id": 2, "data-no": "999"}]))
    samples = load_benchmark(BenchmarkFile(str(tmp_path / "test.json"), mat_table=str(fixtures_dir / "med-mat" / "subsets.tsv")))
    assert [s.task for s in samples] == ["classification", "classification"] and not any(s.skip for s in samples)
    assert samples[0].triplet == ("CT", "Kidney", "Kidney Diseases Classification") and samples[1].triplet is None
    line = {"key": samples[0].key, "task": "classification", "dataset": "med_mat", "prompt": samples[0].record.prompt, "reference": "B"}
    row = score_prediction({**line, "text": "The answer is B", "triplet": list(samples[0].triplet)}, samples[0].record)
    assert (row["pred_label"], row["label"], row["triplet"]) == ("Cyst", "Cyst", samples[0].triplet)
    assert score_prediction({**line, "text": "Stone"}, samples[0].record)["pred_label"] == "Stone"


# -- scoring ---------------------------------------------------------------------------------------
def test_perfect_predictions_score_one_on_every_task(tmp_path):
    path = make_phantom_dataset(tmp_path, 2, seed=3)
    rows = []
    for s in load_benchmark(path):
        gt = [g.to_dict() for g in reference_groundings(s.record, s.record.image_sizes)]
        line = {"key": s.key, "task": s.task, "lang": s.record.lang, "dataset": s.dataset, "ability": s.ability,
                "prompt": s.record.conversation[-2].content, "reference": s.record.answer}  # fmt: skip
        rows.append(score_prediction({**line, "text": TextBoxCodec().strip(s.record.answer), "groundings": gt, "gt_groundings": gt}, s.record))
    table = [r for r in summarize(rows).rows if r["by"] == "all"]
    assert {r["task"] for r in table} == {"classification", "detection", "grounded_report", "identification", "multi_image/open", "regional_cot", "report", "vqa"}
    for row in table:
        scores = {k: v for k, v in row.items() if k not in ("task", "by", "group", "n", "cider")}
        assert scores and all(v == pytest.approx(1.0) for v in scores.values()), row
    detection = next(r for r in rows if r["task"] == "detection" and "miou" in r["metrics"])
    assert detection["objects"] and len(detection["detections"]) == len(detection["objects"])


def test_a_missed_box_lowers_detection_scores(tmp_path):
    path = make_phantom_dataset(tmp_path, 1, seed=4, tasks=("detection",), langs=("en",))
    sample = load_benchmark(path)[0]
    gt = [g.to_dict() for g in reference_groundings(sample.record, sample.record.image_sizes)]
    shifted = [{**g, "boxes": [[0, 0, 2, 2]]} for g in gt]
    line = {"key": sample.key, "task": "detection", "dataset": "p", "text": "", "groundings": shifted, "gt_groundings": gt, "reference": sample.record.answer}
    metrics = score_prediction(line, sample.record)["metrics"]
    assert metrics["region_f1"] == 0.0 and metrics["object_f1"] == 1.0


# -- configs -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", sorted((ROOT / "eval" / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_eval_configs_are_valid(path):
    config = load_eval_config(path)
    assert config.data and config.model and config.output_dir and config.batch_size >= 1
    assert all(Path(spec.path).is_absolute() for spec in config.data)  # resolved against the YAML's folder


def test_med_mim_config_lists_the_six_benchmark_files():
    config = load_eval_config(ROOT / "eval" / "configs" / "med_mim.yaml")
    assert sorted(Path(spec.path).name for spec in config.data) == sorted(MED_MIM)


def test_overrides_replace_data_but_keep_listed_options(tmp_path):
    (tmp_path / "c.yaml").write_text("data:\n  - {path: a.jsonl, name: first, image_root: imgs}\nbatch_size: 3\n")
    config = load_eval_config(tmp_path / "c.yaml", {"data": [str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl")], "limit": 5, "batch_size": None})
    assert [s.dataset for s in config.data] == ["first", "b"] and config.data[0].image_root == str(tmp_path / "imgs")
    assert (config.batch_size, config.limit) == (3, 5)
    with pytest.raises(ValueError, match="unknown field"):
        load_eval_config({"batchsize": 2})


# -- end to end with the tiny model --------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny():
    from medrega import presets

    return presets.build("tiny")


@pytest.fixture(scope="module")
def evaluated(tiny, tmp_path_factory):
    """Three runs into one folder: the first 2 lines of each file; the rest, interrupted at the second
    batch; then a resume (after a torn line was appended). ``calls`` holds each run's batch sizes."""
    model, processor = tiny
    root = tmp_path_factory.mktemp("bench")
    en = make_phantom_dataset(root / "en", 3, seed=7, tasks=("detection", "vqa", "classification", "grounded_report"), langs=("en",))
    zh = make_phantom_dataset(root / "zh", 1, seed=8, tasks=("identification", "report"), langs=("zh",), filename="zh.jsonl")
    (root / "en" / "images" / "phantom_00002.png").unlink()  # 4 samples of the third phantom lose their image
    out = root / "out"
    real, calls, fail_at = model.generate, [[], [], []], {1: 2}
    run = 0

    def counting_generate(**kwargs):
        calls[run].append(kwargs["input_ids"].shape[0])
        if fail_at.get(run) == len(calls[run]):
            raise KeyboardInterrupt
        return real(**kwargs)

    model.generate = counting_generate
    try:
        options = {"batch_size": 4, "max_new_tokens": 6, "progress": False}
        run_benchmark((model, processor), [str(en), str(zh)], out, limit=2, **options)
        after_limit = set(read_predictions(out / "predictions.jsonl"))
        run = 1
        with pytest.raises(KeyboardInterrupt):
            run_benchmark((model, processor), [str(en), str(zh)], out, **options)
        after_interrupt = read_predictions(out / "predictions.jsonl")
        with open(out / "predictions.jsonl", "a") as f:
            f.write('{"key": "torn')
        run = 2
        markdown = run_benchmark((model, processor), [str(en), str(zh)], out, **options)
    finally:
        del model.generate
    return {"out": out, "files": [en, zh], "calls": calls, "after_limit": after_limit, "after_interrupt": after_interrupt, "markdown": markdown}


def test_resume_generates_only_missing_samples(evaluated):
    calls = evaluated["calls"]
    assert sum(calls[0]) == 4 and len(evaluated["after_limit"]) == 4  # first 2 lines of each file
    assert calls[1] == [4, 2]  # 6 samples left with images: the second batch was interrupted
    assert len(evaluated["after_interrupt"]) == 8  # the first batch was saved
    assert sum(calls[2]) == 2  # only the two samples of the interrupted batch are generated again
    assert evaluated["after_limit"] < set(evaluated["after_interrupt"])


def test_predictions_have_one_line_per_sample(evaluated):
    lines = [json.loads(line) for line in (evaluated["out"] / "predictions.jsonl").read_text().splitlines()]
    assert len(lines) == 14 and len({line["key"] for line in lines}) == 14
    assert all(set(FIELDS) <= set(line) for line in lines)
    skipped = [line for line in lines if line["skipped"]]
    assert len(skipped) == 4 and all(line["skipped"].startswith("image not found") and line["raw_output"] is None for line in skipped)
    done = [line for line in lines if not line["skipped"]]
    assert all(isinstance(line["raw_output"], str) and line["reference"] for line in done)
    assert all(line["gt_groundings"] for line in done if line["task"] in ("detection", "grounded_report"))
    assert Counter(line["lang"] for line in done) == {"en": 8, "zh": 2}


def test_metrics_tables_break_down_by_task_and_count_skips(evaluated):
    out, markdown = evaluated["out"], evaluated["markdown"]
    assert (out / "metrics.md").read_text() == markdown
    assert "Samples: 14 (10 scored, 4 skipped)" in markdown and "- 4 x image not found" in markdown
    payload = json.loads((out / "metrics.json").read_text())
    assert payload["samples"] == {"total": 14, "scored": 10, "skipped": 4}
    overall = {r["task"]: r for r in payload["rows"] if r["by"] == "all"}
    assert set(overall) == {"detection", "vqa", "classification", "grounded_report", "identification", "report"}
    assert {t: r["n"] for t, r in overall.items()} == {"detection": 2, "vqa": 2, "classification": 2, "grounded_report": 2, "identification": 1, "report": 1}
    assert "acc@0.5" in overall["detection"] and "bleu4" in overall["report"] and "accuracy" in overall["classification"]
    assert {(r["task"], r["group"]) for r in payload["rows"] if r["by"] == "dataset"} >= {("detection", "phantoms"), ("report", "zh")}
    for task in overall:
        assert f"| {task} | all | all |" in markdown


def test_cli_and_script_reuse_finished_predictions(evaluated, tiny, tmp_path, monkeypatch):
    from medrega import MedRegAForConditionalGeneration
    from medrega.cli import main

    model, processor = tiny
    model.save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")
    monkeypatch.setattr(MedRegAForConditionalGeneration, "generate", lambda *a, **k: pytest.fail("nothing is left to generate"))
    before = sorted((evaluated["out"] / "predictions.jsonl").read_text().splitlines())
    en, zh = evaluated["files"]
    assert main(["eval", "--model", str(tmp_path / "model"), "--data", str(en), str(zh), "--out", str(evaluated["out"])]) == 0
    config = en.parents[1] / "run.yaml"  # data paths relative to the YAML's folder
    config.write_text(f"model: {tmp_path / 'model'}\ndata:\n  - en/phantoms.jsonl\n  - {{path: zh/zh.jsonl, name: chinese}}\n")
    script = runpy.run_path(str(ROOT / "eval" / "run_eval.py"))
    assert script["main"](["--config", str(config), "--out", str(evaluated["out"]), "--no-progress"]) == 0
    assert sorted((evaluated["out"] / "predictions.jsonl").read_text().splitlines()) == before  # skipped lines are rewritten
    payload = json.loads((evaluated["out"] / "metrics.json").read_text())
    assert payload["samples"]["scored"] == 10
    assert {r["group"] for r in payload["rows"] if r["by"] == "dataset"} == {"phantoms", "chinese"}  # names follow the config


def test_constrained_decoding_adds_the_box_constraint(tiny, tmp_path, monkeypatch):
    from medrega import presets
    from medrega.inference import BoxConstraintLogitsProcessor

    path = make_phantom_dataset(tmp_path / "p", 2, seed=9, tasks=("detection",), langs=("en",))
    seen = []

    def spy_on(model):
        real = model.generate
        monkeypatch.setattr(model, "generate", lambda **kwargs: seen.append([type(p) for p in kwargs["logits_processor"]]) or real(**kwargs))

    model, processor = tiny
    spy_on(model)
    run_benchmark((model, processor), str(path), tmp_path / "out", batch_size=2, max_new_tokens=6, constrained=True, progress=False)
    assert seen == [[BoxConstraintLogitsProcessor]]
    lines = read_predictions(tmp_path / "out" / "predictions.jsonl")
    assert len(lines) == 2 and not any(line["problems"] for line in lines.values())  # no malformed box can be written
    text_model, text_processor = presets.build("tiny", region_codec={"type": "text", "scale": 1000}, hidden_size=64, num_layers=1, vision_layers=1, vision_width=64)
    seen.clear()
    spy_on(text_model)
    run_benchmark((text_model, text_processor), str(path), tmp_path / "text", batch_size=2, max_new_tokens=6, constrained=True, progress=False)
    assert seen == [[]] and len(read_predictions(tmp_path / "text" / "predictions.jsonl")) == 2  # as the Assistant: unconstrained, no failure
