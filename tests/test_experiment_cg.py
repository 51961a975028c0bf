"""The CG experiment runner: every row of the plan with its seed spread, resume, redo, the CLI."""

import json
import shutil

import pytest

from medrega.builders.phantom_records import make_phantom_dataset
from medrega.cli import build_parser, main
from medrega.data.mat_planner import plan_cg, write_mixes
from medrega.data.mat_registry import MatRegistry
from medrega.experiments import cg as cg_module
from medrega.experiments import run_cg

pytestmark = pytest.mark.usefixtures("one_thread")

# target CT / Lung / covid; related-1 = CT/Lung/cancer + X-ray/Lung/covid; two unrelated; MRI/Lung/cancer for ablations
ENTRIES = [("CT", "Lung", "Nodule cancer"), ("X-ray", "Lung", "COVID-19"), ("MRI", "Brain", "Glioma tumor"),
           ("US", "Breast", "Severity level"), ("MRI", "Lung", "Lung cancer")]  # fmt: skip
SETTINGS = {"overrides": {"model": "tiny", "max_steps": 2, "micro_batch_size": 2, "save_every": 2, "warmup_steps": 0},
            "batch_size": 4, "max_new_tokens": 4, "progress": False}  # fmt: skip


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("cg")
    registry = MatRegistry()
    for k, (modality, area, task) in enumerate(ENTRIES):
        path = make_phantom_dataset(root / f"e{k}", 2, seed=10 + k, tasks=("classification",), langs=("en",))
        registry.register(modality, area, task, name=f"e{k}", path=str(path))
    plan = plan_cg(registry, ("CT", "Lung", "covid"), kind="user")
    target = make_phantom_dataset(root / "target", 2, seed=99, tasks=("classification",), langs=("en",))
    return root, plan, target


@pytest.fixture(scope="module")
def first(world, tmp_path_factory):
    root, plan, target = world
    write_mixes(plan, root / "mixes")
    out = tmp_path_factory.mktemp("exp")
    return out, run_cg(root / "mixes", target, out, seeds=(0, 1), echo=False, **SETTINGS)


def test_plan_has_related_control_and_ablations(world):
    _, plan, _ = world
    assert [m.name for m in plan.mixes] == ["related-1", "control-1", "ablation-no-modality", "ablation-no-task"]


def test_table_has_every_row_of_the_plan_and_the_seed_spread(first, world):
    out, result = first
    names = ["untrained", "related-1", "control-1", "ablation-no-modality", "ablation-no-task"]
    assert [r.name for r in result.runs] == names and len(result.trained) == 2 * len(names)
    table = json.loads((out / "cg.json").read_text())
    assert table["target"] == "CT / Lung / covid" and table["seeds"] == [0, 1]
    rows = {r["mix"]: r for r in table["rows"]}
    assert list(rows) == [*names, "related-1 - control-1"] and rows["related-1 - control-1"]["role"] == "gap"
    for name in names:
        r = rows[name]
        assert r["seeds"] == 2 and len(r["per_seed"]) == 2 and all(0.0 <= v <= 1.0 for v in r["per_seed"])
        assert r["min"] == min(r["per_seed"]) and abs(r["mean"] - sum(r["per_seed"]) / 2) < 1e-9 and r["std"] >= 0
    gap = rows["related-1 - control-1"]["per_seed"]
    assert gap == [a - b for a, b in zip(rows["related-1"]["per_seed"], rows["control-1"]["per_seed"])]
    assert set(table["summary"]) == {"cg_related_accuracy", "cg_unrelated_accuracy", "cg_gap", "cg_gap_std", "cg_gap_min"}
    markdown = (out / "cg.md").read_text()
    assert all(f"| {n} |" in markdown for n in names) and "±" in markdown
    assert (out / "cg.tsv").read_text().splitlines()[0].endswith("seed_0\tseed_1")
    run = out / "runs" / "related-1" / "seed-1"
    assert (run / "model" / "config.json").is_file() and not (run / "checkpoints").exists()
    assert json.loads((run / "result.json").read_text())["train"]["steps"] == 2


def test_second_call_resumes_and_missing_or_torn_results_are_redone(first, world, monkeypatch, tmp_path):
    out, result = first
    root, _, target = world
    calls = []
    real_train = cg_module._one_run

    def spy(run, seed, *args, **kwargs):
        calls.append((run.name, seed))
        return real_train(run, seed, *args, **kwargs)

    monkeypatch.setattr(cg_module, "_one_run", spy)
    stamp = (out / "runs" / "control-1" / "seed-0" / "result.json").stat().st_mtime_ns
    again = run_cg(root / "mixes", target, out, seeds=(0, 1), echo=False, **SETTINGS)
    assert calls == [] and again.trained == [] and again.scores == result.scores
    assert (out / "runs" / "control-1" / "seed-0" / "result.json").stat().st_mtime_ns == stamp

    (out / "runs" / "related-1" / "seed-0" / "result.json").unlink()  # killed before its result was written
    (out / "runs" / "ablation-no-task" / "seed-1" / "result.json").write_text('{"score": 0.')  # torn
    stale = out / "runs" / "related-1" / "seed-0" / "eval" / "predictions.jsonl"
    stale.write_text('{"key": "stale"}\n')
    third = run_cg(root / "mixes", target, out, seeds=(0, 1), echo=False, **SETTINGS)
    assert calls == [("related-1", 0), ("ablation-no-task", 1)] == third.trained
    assert "stale" not in stale.read_text()
    assert third.scores == result.scores  # the same seeds give the same runs

    calls.clear()  # other training settings (in a copy): the trained runs are redone, the untrained one kept
    shutil.copytree(out, tmp_path / "copy")
    other = {**SETTINGS, "overrides": {**SETTINGS["overrides"], "max_steps": 1}}
    run_cg(root / "mixes", target, tmp_path / "copy", seeds=(0,), echo=False, **other)
    assert calls == [(name, 0) for name in ("related-1", "control-1", "ablation-no-modality", "ablation-no-task")]


def test_cli_runs_a_plan(first, world, tmp_path, capsys, monkeypatch):
    out, result = first
    root, _, target = world
    parser = build_parser()
    args = parser.parse_args(["experiment", "cg", str(root / "mixes"), "--target", str(target), "--out", str(out), "--seeds", "0", "1"])
    assert args.seeds == [0, 1] and args.target == [str(target)]
    monkeypatch.setattr(cg_module, "_one_run", lambda *a, **k: pytest.fail("nothing to redo"))
    code = main(["experiment", "cg", str(root / "mixes"), "--target", str(target), "--out", str(out), "--seeds", "0", "1",
                 "--set", "model=tiny", "--set", "max_steps=2", "--set", "micro_batch_size=2", "--set", "save_every=2",
                 "--set", "warmup_steps=0", "--batch-size", "4", "--max-new-tokens", "4", "--no-progress"])  # fmt: skip
    assert code == 0 and "| related-1 - control-1 | gap |" in capsys.readouterr().out
