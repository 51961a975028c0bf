"""Med-MAT registry, CG planner and question builder on Med-MAT's published tables."""

from pathlib import Path

import pytest

from medrega.answers import LETTERS, parse_options
from medrega.builders.medmat_questions import mat_questions
from medrega.data.mat_planner import CoverageError, plan_cg, write_mixes
from medrega.data.mat_registry import MatRegistry, task_family
from medrega.data.medmat import ELEMENTS
from medrega.training import load_config


@pytest.fixture(scope="module")
def registry(fixtures_dir):
    root = fixtures_dir / "med-mat"
    return MatRegistry.from_tables(root / "subsets.tsv", root / "datasets.tsv")


def test_registry_loads_both_tables_and_covers_every_row(registry):
    assert len(registry.entries("subset")) == 53 and len(registry.entries("dataset")) == 109  # the "106 datasets"
    assert registry.uncovered() == []
    assert registry.values("task", "subset") == ["cancer", "cell", "covid", "disease", "level", "region", "state"]
    assert registry["dataset:16"].area == "Mouth" and registry["subset:09"].area == "Mouth"  # "Teeth" vs "Mouth"
    assert registry["dataset:97"].modality == "US" and registry["dataset:62"].family == "disease"  # "Pnemonia"
    assert task_family("COVID-19 and Pneumonia Classification") == "covid" and task_family("Cancer Degree Classification") == "level"
    assert task_family("Knitting") is None


def test_lookups_by_any_element_and_alias(registry):
    assert [e.no for e in registry.find("ultrasound", kind="subset")] == [24, 43, 44]
    assert [e.no for e in registry.find(area="lungs", task="COVID19", kind="subset")] == [3, 28]
    assert [e.no for e in registry.find(family="cell", kind="subset")] == [18, 20]
    assert {e.no for e in registry.find(name="SICAPv2")} == {34, 96}
    assert registry.normalize("X-Ray", "pulmonary", "covid") == ("X-ray", "Lung", "covid")
    with pytest.raises(KeyError, match="subset:99"):
        registry["subset:99"]


def test_user_datasets_by_call_and_table(registry, tmp_path):
    own = MatRegistry(registry)
    entry = own.register("PET", "Lung", "Nodule malignancy", name="my-pet", path="pet.jsonl")
    assert entry.key == "user:my-pet" and entry.mat == ("PET", "Lung", "cancer")
    assert [(e, el) for e, el, _ in own.uncovered()] == [(entry, "modality")]
    own.modalities.add("PET", ["positron emission tomography"])
    assert own.uncovered() == [] and own.find("positron emission tomography") == [entry]
    table = tmp_path / "mine.tsv"
    table.write_text("name\tmodality\tarea\ttask\tpath\nward-cxr\txray\tchest\tEffusion grading\trecords/ward.jsonl\n")
    (added,) = own.register_table(table)
    assert added.mat == ("X-ray", "Chest", "level") and added.path == str(tmp_path / "records" / "ward.jsonl")
    assert own.with_paths("{kind}_{no:02d}.jsonl")["user:my-pet"].path == "pet.jsonl"
    assert own.with_paths("{kind}_{no:02d}.jsonl")["user:ward-cxr"].path == added.path
    assert MatRegistry([own.register("MRI", "Knee", "Tear", name="no-path")]).with_paths("{no:02d}.jsonl")["user:no-path"].path is None
    with pytest.raises(ValueError, match="already holds"):
        own.register_table(table)


def test_plan_for_ct_lung_covid(registry):
    plan = plan_cg(registry, "subset:03")  # CT / Lung / COVID-19 Classification, held out
    assert plan.target == ("CT", "Lung", "covid") and [e.no for e in plan.held_out] == [3]
    related = plan.related[0]  # Med-MAT's own example: CT / Lung / cancer + X-ray / Lung / COVID
    assert [e.no for e in related.entries] == [4, 28] and related.shares == (("modality", "area"), ("area", "task"))
    assert related.directions == ("fixed_area", "modality_area") and plan.by_direction("fixed_area") == [related]
    assert any("no fixed_modality" in n for n in plan.notes)
    assert all(m.directions == ("separate",) and len(m.entries) == 2 for m in plan.related[1:])
    assert all(3 not in [e.no for e in m.entries] for m in plan.mixes)

    assert [c.of for c in plan.controls] == [m.name for m in plan.related]
    for control, mix in zip(plan.controls, plan.related):
        assert len(control.entries) == len(mix.entries) and control.covers == ()
        assert all(not ({e.modality, e.area, e.family} & set(plan.target)) for e in control.entries)

    ablations = {a.dropped: a for a in plan.ablations}
    assert set(ablations) == {"modality", "task"}  # only subsets of the lung bring COVID: no ablation of the area
    assert any("ablation without area" in n for n in plan.notes)
    for dropped, mix in ablations.items():
        assert len(mix.entries) == 2 and mix.covers == tuple(e for e in ELEMENTS if e != dropped)
        assert all(dropped not in s for s in mix.shares)
    assert [e.no for e in ablations["modality"].entries] == [30, 28]
    assert plan_cg(registry, "subset:03", seed=1).related == plan.related  # the seed moves controls only


def test_plan_directions_and_triples(registry):
    xray = plan_cg(registry, ("X-Ray", "Lung", "Tuberculosis"))
    fixed = xray.by_direction("fixed_modality")
    assert [[e.no for e in m.entries] for m in fixed] == [[26, 28], [26, 47]]
    assert all(e.modality == "X-ray" for m in fixed for e in m.entries) and xray.related[: len(fixed)] == fixed
    us = plan_cg(registry, "subset:24")  # US / Breast / cancer: every element from a different subset
    assert us.related and all(len(m.entries) == 3 and m.directions == ("separate",) for m in us.related)
    assert all(sorted(len(s) for s in m.shares) == [1, 1, 1] for m in us.related)
    assert [len(c.entries) for c in us.controls] == [3] * len(us.related)
    assert plan_cg(registry, "subset:24", max_size=2).related == []


def test_plan_refuses_an_uncoverable_element(registry):
    with pytest.raises(CoverageError, match="modality 'PET'") as err:
        plan_cg(registry, ("PET", "Lung", "covid"))
    assert err.value.element == "modality"
    with pytest.raises(CoverageError, match="modality 'Co'.*only the held-out 01 Co"):
        plan_cg(registry, ("Co", "Cervix", "state"))  # colposcopy is subset 1 only


def test_mixes_are_training_configs(registry, tmp_path):
    plan = plan_cg(registry.with_paths(str(tmp_path / "records" / "{kind}_{no:02d}.jsonl")), "subset:03")
    with pytest.raises(ValueError, match="without a record file"):
        write_mixes(plan_cg(registry, "subset:03"), tmp_path / "none")
    paths = write_mixes(plan, tmp_path / "mixes", base_config={"max_steps": 5, "model": "tiny"})
    assert [p.stem for p in paths] == [m.name for m in plan.mixes]
    config = load_config(paths[0])
    assert config.max_steps == 5 and config.output_dir == "runs/cg/related-1"
    assert [str(Path(s.path).resolve()) for s in config.data] == [str((tmp_path / "records" / f"subset_{n:02d}.jsonl").resolve()) for n in (4, 28)]
    table = (tmp_path / "mixes" / "plan.tsv").read_text().splitlines()
    assert table[0].split("\t")[:8] == ["mix", "role", "of", "directions", "size", "modality", "area", "task"]
    assert len(table) == 1 + len(plan.mixes)
    assert "related-1" in plan.table() and "note: no fixed_modality" in plan.table()


ROWS = [(f"kidney/{label}-{i}.png", label) for label in ("Cyst", "Stone", "Normal", "Tumor", "Other") for i in range(12)]


def test_questions_in_med_mat_style(registry):
    entry = registry["subset:02"]  # CT / Kidney
    built = mat_questions(ROWS, entry, langs=("en", "zh"), cap=20, label_names={"zh": {"Cyst": "囊肿"}}, seed=3)
    assert built.counts == {"Cyst": 4, "Stone": 4, "Normal": 4, "Tumor": 4, "Other": 4} and len(built) == 40
    assert {r.lang for r in built} == {"en", "zh"}
    wordings = {r.meta["paraphrase"] for r in built}
    assert 2 <= len(wordings) <= 3
    for r in built:
        options = parse_options(r.prompt)
        assert 2 <= len(options) <= 4 and options == r.meta["options"]
        assert r.answer in LETTERS[: len(options)]
        shown = {"zh": {"Cyst": "囊肿"}}.get(r.lang, {}).get(r.meta["label"], r.meta["label"])
        assert options[LETTERS.index(r.answer)] == shown
        assert set(r.meta["options"]) <= {"Cyst", "Stone", "Normal", "Tumor", "Other", "囊肿"}
        assert r.images[0].startswith("kidney/") and r.meta["label"] in r.images[0]
        assert (r.modality, r.area, r.mat_task, r.meta["data-no"]) == ("CT", "Kidney", "Kidney Diseases Classification", 2)
    zh = [r for r in built if r.lang == "zh"]
    assert all("肾脏CT图像" in r.prompt for r in zh) and all("kidney CT image" in r.prompt for r in built if r.lang == "en")

    again = mat_questions(ROWS, entry, langs=("en", "zh"), cap=20, label_names={"zh": {"Cyst": "囊肿"}}, seed=3)
    assert [r.to_dict() for r in again] == [r.to_dict() for r in built]
    other = mat_questions(ROWS, entry, langs=("en", "zh"), cap=20, seed=4)
    assert [r.prompt for r in other] != [r.prompt for r in built]


def test_question_balance_cap_and_refusals(registry):
    entry = registry["subset:02"]
    rare = [r for r in ROWS if r[1] != "Tumor"] + [("kidney/Tumor-0.png", "Tumor"), ("x.png", "Unknown")]
    built = mat_questions(rare, entry, per_label=5, labels=["Cyst", "Stone", "Normal", "Tumor", "Other"])
    assert built.counts == {"Cyst": 5, "Stone": 5, "Normal": 5, "Tumor": 1, "Other": 5}
    assert built.skipped == [("x.png", "label 'Unknown' not in the label set")]
    two = mat_questions([("a.png", "yes"), ("b.png", "no")], entry)
    assert all(len(r.meta["options"]) == 2 for r in two)
    with pytest.raises(ValueError, match="2..4 options"):
        mat_questions(ROWS, entry, max_options=5)
    with pytest.raises(ValueError, match="at least 2 labels"):
        mat_questions([("a.png", "Cyst")], entry)
    with pytest.raises(ValueError, match="smaller than the 5 labels"):
        mat_questions(ROWS, entry, cap=3)
