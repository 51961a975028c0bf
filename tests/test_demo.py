"""``medrega demo`` end to end at a toy size, and the CLI's command list."""

import argparse
import json
import subprocess
import sys

import pytest
import torch
from PIL import Image

from medrega.cli import build_parser
from medrega.demo import run_demo


def test_demo_writes_metrics_drawings_and_model(tmp_path):
    metrics = run_demo(tmp_path, max_steps=2, n_train=16, n_heldout=4, batch_size=8, progress=False)
    saved = json.loads((tmp_path / "metrics.json").read_text(encoding="utf-8"))
    assert saved == metrics
    assert 0.0 <= metrics["grounding_acc@0.5"] <= 1.0 and 0.0 <= metrics["mean_iou"] <= 1.0
    assert metrics["train_steps"] == 2 and metrics["heldout_samples"] == 8
    assert "synthetic" in metrics["data"]
    structures = metrics["by_structure"]  # every single-region query, by the structure asked for
    assert sum(s["samples"] for s in structures.values()) == metrics["single_region_samples"] > 0
    assert all(s["size"] == ("small" if name in ("nodule", "lesion") else "large") for name, s in structures.items())
    negatives = metrics["negatives"]  # held-out queries for an absent structure, their own line
    assert negatives["samples"] > 0 and 0.0 <= negatives["not_found_rate"] <= 1.0 and 0.0 <= negatives["boxed_rate"] <= 1.0
    assert set(negatives["by_language"]) == {"en", "zh"} and set(negatives["by_structure"]) <= {"nodule", "lesion"}
    assert sum(s["samples"] for s in negatives["by_structure"].values()) == negatives["samples"]
    assert metrics["real_dicom"]["file"] == "CT_small.dcm"
    for name in ("grounding.png", "dicom.png"):
        with Image.open(tmp_path / name) as image:
            assert image.width > 200 and image.height > 100
    assert (tmp_path / "model" / "config.json").is_file() and (tmp_path / "model" / "model.safetensors").is_file()


def test_demo_prepares_the_model_and_keeps_a_frozen_tower_frozen(tmp_path):
    seen = {}

    def prepare(model, processor):
        seen["tower"] = {k: v.clone() for k, v in model.vision_tower.state_dict().items()}
        seen["projector"] = {k: v.clone() for k, v in model.projector.state_dict().items()}
        seen["model"] = model

    run_demo(tmp_path, max_steps=2, n_train=16, n_heldout=2, batch_size=8, stage="instruction", lr=1e-2, progress=False, prepare_model=prepare)
    model = seen["model"]
    assert all(torch.equal(v, seen["tower"][k]) for k, v in model.vision_tower.state_dict().items())
    assert any(not torch.equal(v, seen["projector"][k]) for k, v in model.projector.state_dict().items())


def test_cli_has_every_command_and_each_one_parses_its_help():
    parser = build_parser()
    (commands,) = [action for action in parser._actions if isinstance(action, argparse._SubParsersAction)]
    assert set(commands.choices) == {"demo", "train", "eval", "detect", "identify", "report", "ask", "convert", "experiment"}
    for command in commands.choices:
        with pytest.raises(SystemExit) as exited:
            parser.parse_args([command, "--help"])
        assert exited.value.code == 0
    out = subprocess.run([sys.executable, "-m", "medrega.cli", "--help"], capture_output=True, text=True, check=True).stdout
    assert "COMMAND" in out  # the module runs as a program
