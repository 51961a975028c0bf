"""``medrega demo`` end to end at a toy size, and the CLI's command list."""

import json
import subprocess
import sys

from PIL import Image

from medrega.demo import run_demo


def test_demo_writes_metrics_drawings_and_model(tmp_path):
    metrics = run_demo(tmp_path, max_steps=2, n_train=16, n_heldout=4, batch_size=8, progress=False)
    saved = json.loads((tmp_path / "metrics.json").read_text(encoding="utf-8"))
    assert saved == metrics
    assert 0.0 <= metrics["grounding_acc@0.5"] <= 1.0 and 0.0 <= metrics["mean_iou"] <= 1.0
    assert metrics["train_steps"] == 2 and metrics["heldout_samples"] == 8
    assert "synthetic" in metrics["data"]
    assert metrics["real_dicom"]["file"] == "CT_small.dcm"
    for name in ("grounding.png", "dicom.png"):
        with Image.open(tmp_path / name) as image:
            assert image.width > 200 and image.height > 100
    assert (tmp_path / "model" / "config.json").is_file() and (tmp_path / "model" / "model.safetensors").is_file()


def test_cli_help_lists_every_command():
    out = subprocess.run([sys.executable, "-m", "medrega.cli", "--help"], capture_output=True, text=True, check=True).stdout
    for command in ("demo", "train", "eval", "detect", "identify", "report", "ask"):
        assert command in out
