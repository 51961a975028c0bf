"""The six released Med-MIM benchmark files through ``medrega eval`` with their images present.

The images are STAND-INS: small solid-colour files written at the paths the files name (PNG or JPEG as
the name says), under a temporary image root marked by a ``STAND-IN-IMAGES.txt``; they are not the
Med-MIM images. The model is the tiny preset (random weights): the run's bookkeeping is tested (every
question evaluated and counted under its ability and dataset), not its answers.
"""

import json
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from medrega.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")

FILES = {  # file -> ability (None: held-out sets name none)
    "Med_MIM_benchmark_Held_in_Temporal.json": "temporal",
    "Med_MIM_benchmark_Held_in_Reasoning.json": "reasoning",
    "Med_MIM_benchmark_Held_in_Comparison.json": "comparison",
    "Med_MIM_benchmark_Held_in_Coreference.json": "coreference",
    "Med_MIM_benchmark_Held_out_ODIR.json": None,
    "Med_MIM_benchmark_Held_out_RAD.json": None,
}
PER_FILE = 3  # questions kept per file, spread over it (the files hold 344 to 1,463)


def _subsample(src: Path, dst: Path) -> list[dict]:
    """Every n-th question of ``src`` (first and last included), written to ``dst`` under the same name."""
    items = json.loads(src.read_text(encoding="utf-8"))
    picked = [items[round(i * (len(items) - 1) / (PER_FILE - 1))] for i in range(PER_FILE)]
    dst.write_text(json.dumps(picked, ensure_ascii=False), encoding="utf-8")
    return picked


def _stand_in_images(records: list[dict], root: Path) -> int:
    """A 24 x 24 solid image at every path the records name; returns how many were written."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "STAND-IN-IMAGES.txt").write_text("Solid-colour stand-ins written by tests/test_med_mim_eval.py; not Med-MIM images.\n")
    paths = {p for r in records for p in r["images"]}
    for k, rel in enumerate(sorted(paths)):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (24, 24), (40 * k % 256, 90, 160)).save(path)  # format from the suffix (.png / .jpg)
    return len(paths)


@pytest.fixture(scope="module")
def setup(fixtures_dir, tmp_path_factory):
    from medrega import presets

    tmp = tmp_path_factory.mktemp("med_mim_eval")
    bench = tmp / "med-mim"
    bench.mkdir()
    questions = {name: _subsample(fixtures_dir / "med-mim" / name, bench / name) for name in FILES}
    written = _stand_in_images([r for rs in questions.values() for r in rs], tmp / "images")
    model, processor = presets.build("tiny", seed=0, hidden_size=64, num_layers=1, vision_layers=1, vision_width=64)
    model.save_pretrained(tmp / "model")
    processor.save_pretrained(tmp / "model")
    entries = "".join(f"  - {{path: med-mim/{name}, image_root: images}}\n" for name in FILES)
    config = tmp / "med_mim.yaml"
    config.write_text(f"model: {tmp / 'model'}\nbatch_size: 9\nmax_new_tokens: 4\ndata:\n{entries}", encoding="utf-8")
    return {"tmp": tmp, "questions": questions, "written": written, "config": config}


def test_eval_cli_counts_every_question_under_its_ability(setup, capsys):
    out = setup["tmp"] / "out"
    assert setup["written"] >= 2 * len(FILES) * PER_FILE  # two or three images per question
    assert main(["eval", "--config", str(setup["config"]), "--out", str(out)]) == 0
    assert "| multi_image/" in capsys.readouterr().out
    payload = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    total = len(FILES) * PER_FILE
    assert payload["samples"] == {"total": total, "scored": total, "skipped": 0} and payload["skipped"] == {}

    by_ability, by_dataset = Counter(), Counter()
    for row in payload["rows"]:
        if row["by"] == "ability":
            by_ability[row["group"]] += row["n"]
        elif row["by"] == "dataset":
            by_dataset[row["group"]] += row["n"]
    expected = Counter({ability: PER_FILE for ability in FILES.values() if ability})
    assert by_ability == expected  # temporal, reasoning, comparison, coreference: 3 questions each
    assert by_dataset == Counter({Path(name).stem: PER_FILE for name in FILES})  # the held-out sets too
    tasks = {row["task"] for row in payload["rows"]}
    assert tasks <= {"multi_image/choice", "multi_image/open"} and "multi_image/choice" in tasks  # ODIR's lettered options
    lines = [json.loads(x) for x in (out / "predictions.jsonl").read_text(encoding="utf-8").splitlines()]
    assert Counter(line["ability"] for line in lines if line["ability"]) == expected
    assert all(isinstance(line["text"], str) for line in lines)


def test_without_the_image_root_every_question_is_skipped(setup):
    out = setup["tmp"] / "no_root"
    files = [str(setup["tmp"] / "med-mim" / name) for name in FILES]  # images looked up beside the files: absent
    assert main(["eval", "--model", str(setup["tmp"] / "model"), "--data", *files, "--out", str(out)]) == 0
    payload = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert payload["skipped"] == {"image not found": len(FILES) * PER_FILE} and payload["samples"]["scored"] == 0
