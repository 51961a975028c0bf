"""The real entry point under the ``deepspeed`` launcher: 2 CPU processes, ZeRO-2 and ZeRO-3."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from medrega.builders.phantom_records import make_phantom_dataset

ROOT = Path(__file__).resolve().parents[1]
LAUNCHER = Path(sys.executable).parent / "deepspeed"
ENV = {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def _config(tmp_path: Path, data: Path, zero: str, max_steps: int, name: str) -> Path:
    config = {
        "model": "tiny",
        "data": [{"path": str(data)}],
        "output_dir": str(tmp_path / name),
        "stage": "full",
        "max_steps": max_steps,
        "micro_batch_size": 2,
        "grad_accumulation": 2,
        "lr": 2.0e-3,
        "warmup_steps": 2,
        "save_every": 5,
        "max_length": 128,
        "precision": "fp32",
        "deepspeed": str(ROOT / "train" / f"{zero}.json"),
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _launch(config: Path, *extra: str) -> subprocess.Popen:
    command = [str(LAUNCHER), "--num_gpus", "2", "--master_port", str(29500 + os.getpid() % 1000), str(ROOT / "train" / "train.py"), "--config", str(config), *extra]
    return subprocess.Popen(command, cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def _finish(process: subprocess.Popen, timeout: float = 400) -> str:
    output, _ = process.communicate(timeout=timeout)
    assert process.returncode == 0, output[-4000:]
    return output


def _losses(run_dir: Path) -> dict[int, float]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {row["step"]: row["loss"] for row in rows}  # a resumed run rewrites the steps after its checkpoint


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory):
    return make_phantom_dataset(tmp_path_factory.mktemp("ds_phantoms"), 40, seed=5, tasks=("detection",), langs=("en",))


@pytest.mark.slow
def test_zero2_two_processes_loss_falls_and_kill_resume_matches(phantoms, tmp_path):
    steps = 20
    _finish(_launch(_config(tmp_path, phantoms, "zero2", steps, "full")))
    full = _losses(tmp_path / "full")
    assert sorted(full) == list(range(1, steps + 1))
    assert sum(full[s] for s in range(16, 21)) < sum(full[s] for s in range(1, 6))

    config = _config(tmp_path, phantoms, "zero2", steps, "killed")
    process = _launch(config)
    latest = tmp_path / "killed" / "checkpoints" / "latest"
    deadline = time.time() + 400
    while not (latest.is_file() and latest.read_text() == "step_10"):
        assert process.poll() is None, process.communicate()[0][-4000:]
        assert time.time() < deadline, "no step-10 checkpoint in time"
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    output = _finish(_launch(config, "--resume"))
    assert "resumed from" in output and "step 10" in output
    resumed = _losses(tmp_path / "killed")
    for step in range(11, steps + 1):
        assert resumed[step] == pytest.approx(full[step], rel=1e-4), (step, resumed[step], full[step])


@pytest.mark.slow
def test_zero3_two_processes_exports_a_loadable_model(phantoms, tmp_path):
    _finish(_launch(_config(tmp_path, phantoms, "zero3", 6, "zero3")))
    losses = _losses(tmp_path / "zero3")
    assert sorted(losses) == list(range(1, 7))
    from medrega import MedRegAForConditionalGeneration

    model = MedRegAForConditionalGeneration.from_pretrained(tmp_path / "zero3" / "model")
    weights = [p for p in model.parameters()]
    assert all(p.numel() > 0 and torch.isfinite(p).all() for p in weights)
