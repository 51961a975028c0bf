"""The training loop: small named steps (model, data, optimizer, loss, checkpoint), one code path
for a single process and for DeepSpeed ZeRO-2/3 launched with ``deepspeed``."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from medrega.data.collate import IGNORE_INDEX
from medrega.models.compile import compile_blocks_
from medrega.models.segment_attention import use_segment_attention_
from medrega.training.checkpoint import CheckpointManager
from medrega.training.config import TrainConfig
from medrega.training.data import TrainData
from medrega.training.distributed import DistEnv, deepspeed_config, init_distributed, pick_dtype
from medrega.training.host_memory import keep_freed_memory
from medrega.training.optim import adamw, cosine_with_warmup, param_groups

__all__ = ["Trainer", "TrainResult", "train"]

logger = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What a run did: the loss per optimizer step, the last step, wall time and throughput."""

    losses: dict[int, float] = field(default_factory=dict)
    last_step: int = 0
    seconds: float = 0.0
    samples_per_second: float = 0.0
    tokens_per_second: float = 0.0
    skipped: dict[str, int] = field(default_factory=dict)


class Trainer:
    """Train a MedRegA model as ``config`` says.

    Args:
        config: the run's :class:`TrainConfig`.
        model, processor: an already built pair (default: built from ``config.model``).
        resume: continue from the latest checkpoint in ``config.output_dir`` (exactly: model,
            optimizer, scheduler, data position and RNG).
        progress: show a progress bar on the main process.

    On a CPU, training steps flush denormal floats to zero (``torch.set_flush_denormal``, restored
    afterwards): without it the optimizer's tiny second moments make every step many times slower;
    and (``keep_host_memory``) freed memory stays in the process, so that steps do not page-fault.
    """

    def __init__(self, config: TrainConfig, model=None, processor=None, resume: bool = False, progress: bool = True):
        self.config = config
        self.env: DistEnv = init_distributed(use_deepspeed=config.deepspeed is not None)
        self.out = Path(config.output_dir)
        self.progress = progress and self.env.is_main
        torch.manual_seed(config.seed)
        self.dtype = pick_dtype(config.precision, self.env.device)
        if config.keep_host_memory and self.env.device.type == "cpu" and keep_freed_memory():
            logger.info("host memory: freed blocks stay in the process (no page faults per step)")
        self.model, self.processor = self.setup_model(model, processor)
        self.data = TrainData(config, self.processor, self.env)
        self.engine, self.optimizer, self.scheduler = self.setup_optimizer()
        self.checkpoints = CheckpointManager(self.out / "checkpoints", config.keep_checkpoints, self.env.rank, self.env.world_size, self.env.barrier)
        self.step = 0
        if resume:
            self.resume()

    # -- setup ----------------------------------------------------------------------------------
    def setup_model(self, model, processor):
        from medrega import presets
        from medrega.models import MedRegAForConditionalGeneration
        from medrega.processing import MedRegAProcessor

        if model is None:
            if self.config.model in presets.PRESETS:
                model, processor = presets.build(self.config.model, seed=self.config.seed)
            else:
                model = MedRegAForConditionalGeneration.from_pretrained(self.config.model)
                processor = MedRegAProcessor.from_pretrained(self.config.model)
        model.set_trainable(self.config.stage)
        if self.config.packing and model.config.image_positions == "shared":
            raise ValueError("packing=True cannot train a model with image_positions='shared' (its positions repeat inside an image); use padded batches")
        if self.config.packing and self.env.device.type == "cpu" and model.config.text_config._attn_implementation in ("sdpa", "eager"):
            use_segment_attention_(model)  # packed rows on the CPU: attention per sample, no masked blocks
        if self.config.lora_r > 0:
            model.apply_lora(r=self.config.lora_r, alpha=self.config.lora_alpha)
        if self.config.gradient_checkpointing:
            model.activation_checkpointing_enable()
        if self.config.compile:
            logger.info("compiled %d repeated blocks (the first step compiles them)", compile_blocks_(model))
        model.to(device=self.env.device, dtype=self.dtype)
        model.train()
        return model, processor

    def setup_optimizer(self):
        groups = param_groups(self.model, self.config.module_lrs, self.config.weight_decay)
        if not groups:
            raise ValueError(f"stage {self.config.stage!r} leaves no trainable parameter")

        def schedule(optimizer):
            return cosine_with_warmup(optimizer, self.config.warmup_steps, self.config.max_steps, self.config.min_lr_ratio)

        if self.env.use_deepspeed:
            import deepspeed

            engine, optimizer, _, scheduler = deepspeed.initialize(
                model=self.model,
                model_parameters=groups,
                lr_scheduler=schedule,
                config=deepspeed_config(self.config.deepspeed, self.config, self.dtype),
            )
            return engine, optimizer, scheduler
        optimizer = adamw(groups)
        return None, optimizer, schedule(optimizer)

    # -- one optimizer step ---------------------------------------------------------------------
    def loss_step(self, micro_batches: list[dict]) -> tuple[float, int, int]:
        """One optimizer step over ``micro_batches`` (see :meth:`backward`)."""
        with flush_denormals(self.env.device.type == "cpu"):
            return self._loss_step(micro_batches)

    def _loss_step(self, micro_batches: list[dict]) -> tuple[float, int, int]:
        loss, samples, tokens = self.backward(micro_batches)
        if self.engine is None:
            if self.config.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.max_grad_norm)
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
        return loss, samples, tokens

    def backward(self, micro_batches: list[dict]) -> tuple[float, int, int]:
        """Forward and backward over the micro-batches of one optimizer step.

        The loss is the sum of token losses divided by the number of label tokens across all
        micro-batches and processes, so every label token weighs the same however the batch is split.
        (Under DeepSpeed, ``engine.step()`` follows each backward; it steps at the accumulation boundary.)

        Returns:
            ``(loss, samples, tokens)``: the step's loss (summed over processes) and this process's counts.
        """
        local_tokens = sum(int((b["labels"][..., 1:] != IGNORE_INDEX).sum()) for b in micro_batches)
        total_tokens = max(1.0, self.env.all_reduce_sum(float(local_tokens)))
        # DeepSpeed divides by accumulation steps and averages over processes; undo that here.
        scale = self.config.grad_accumulation * self.env.world_size if self.engine is not None else 1
        loss_sum = 0.0
        samples = tokens = 0
        module = self.engine if self.engine is not None else self.model
        for batch in micro_batches:
            inputs = {k: v.to(self.env.device) if isinstance(v, torch.Tensor) else v for k, v in batch.items() if k in _MODEL_INPUTS}
            if inputs.get("pixel_values") is not None:
                inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
            out = module(**inputs, num_items_in_batch=total_tokens)
            if self.engine is not None:
                self.engine.backward(out.loss * scale)
                self.engine.step()
            else:
                out.loss.backward()
            loss_sum += float(out.loss.detach())
            samples += int(batch["num_samples"])
            tokens += int(batch["num_tokens"])
        return self.env.all_reduce_sum(loss_sum), samples, tokens

    # -- the loop -------------------------------------------------------------------------------
    def train(self) -> TrainResult:
        """Run until ``config.max_steps``; checkpoint every ``save_every`` steps and at the end."""
        cfg = self.config
        result = TrainResult()
        log = _MetricsLog(self.out, self.env.is_main, resumed_step=self.step)
        bar = tqdm(total=cfg.max_steps, initial=self.step, desc="train", disable=not self.progress, dynamic_ncols=True)
        batches = self.data.batches()
        start = time.perf_counter()
        seen_samples = seen_tokens = 0
        deadline = start + cfg.max_minutes * 60 if cfg.max_minutes else math.inf
        while self.step < cfg.max_steps:
            micro = [next(batches) for _ in range(cfg.grad_accumulation)]
            loss, samples, tokens = self.loss_step(micro)
            self.step += 1
            if not math.isfinite(loss):
                raise FloatingPointError(f"loss is {loss} at step {self.step}; lower the learning rate or check the data")
            elapsed = time.perf_counter() - start
            seen_samples += samples * self.env.world_size
            seen_tokens += tokens * self.env.world_size
            lr = self._lr()
            result.losses[self.step] = loss
            row = {"step": self.step, "loss": round(loss, 6), "lr": lr, "samples_per_s": seen_samples / elapsed, "tokens_per_s": seen_tokens / elapsed, "elapsed_s": elapsed}
            if self.step % cfg.log_every == 0 or self.step == cfg.max_steps:
                log.write(row)
            bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", samples_s=f"{row['samples_per_s']:.1f}", tokens_s=f"{row['tokens_per_s']:.0f}")
            bar.update(1)
            out_of_time = self._all_agree(time.perf_counter() > deadline)
            if self.step % cfg.save_every == 0 or self.step == cfg.max_steps or out_of_time:
                self.save_checkpoint()
            if out_of_time:
                break
        bar.close()
        log.close()
        result.last_step = self.step
        result.seconds = time.perf_counter() - start
        result.samples_per_second = seen_samples / max(result.seconds, 1e-9)
        result.tokens_per_second = seen_tokens / max(result.seconds, 1e-9)
        result.skipped = self.data.skipped()
        if result.skipped and self.env.is_main:
            logger.warning("skipped samples: %s", result.skipped)
        return result

    def _all_agree(self, flag: bool) -> bool:
        """True on every process when any process says so (so all stop at the same step)."""
        return self.env.all_reduce_sum(float(flag)) > 0

    def _lr(self) -> float:
        return float(self.scheduler.get_last_lr()[0])

    # -- checkpoints ----------------------------------------------------------------------------
    def save_checkpoint(self) -> Path:
        """Write an atomic checkpoint of everything needed to resume exactly."""

        def write(tmp: Path, tag: str) -> None:
            if self.engine is not None:
                self.engine.save_checkpoint(str(tmp.parent), tag=tag, save_latest=False)
            elif self.env.is_main:
                state = {k: v.contiguous() for k, v in self.model.state_dict().items()}
                save_file(state, tmp / "model.safetensors")
                torch.save(self.optimizer.state_dict(), tmp / "optimizer.pt")
                torch.save(self.scheduler.state_dict(), tmp / "scheduler.pt")

        return self.checkpoints.save(self.step, write, {"step": self.step, "data": self.data.state_dict()})

    def resume(self) -> bool:
        """Load the latest complete checkpoint; returns False when there is none."""
        checkpoint = self.checkpoints.latest()
        if checkpoint is None:
            logger.info("no checkpoint under %s; starting from scratch", self.checkpoints.root)
            return False
        if self.engine is not None:
            self.engine.load_checkpoint(str(checkpoint.parent), tag=checkpoint.name)
        else:
            self.model.load_state_dict(load_file(checkpoint / "model.safetensors"), strict=True)
            self.optimizer.load_state_dict(torch.load(checkpoint / "optimizer.pt", weights_only=True))
            self.scheduler.load_state_dict(torch.load(checkpoint / "scheduler.pt", weights_only=True))
        state = self.checkpoints.read_state(checkpoint)
        self.step = int(state["step"])
        self.data.load_state_dict(state["data"])
        if self.env.is_main:
            logger.info("resumed from %s (step %d)", checkpoint, self.step)
        return True

    def export(self, directory: str | Path | None = None) -> Path:
        """Save a Hugging Face model directory (model + processor) that ``from_pretrained`` loads."""
        directory = Path(directory or self.out / "model")
        model = self.model
        state_dict = None
        if self.engine is not None and self.engine.zero_optimization_stage() == 3:
            state_dict = self.engine._zero3_consolidated_16bit_state_dict()
        if self.env.is_main:
            if hasattr(model, "merge_lora"):
                model = model.merge_lora()
            model.save_pretrained(directory, state_dict=state_dict)
            self.processor.save_pretrained(directory)
        self.env.barrier()
        return directory


@contextlib.contextmanager
def flush_denormals(enabled: bool = True):
    """Flush denormal floats to zero inside the block, then restore the previous setting."""
    was_flushing = bool((torch.tensor([1e-38]) / 1e3).item() == 0.0)
    if enabled:
        torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(was_flushing)


_MODEL_INPUTS = ("input_ids", "attention_mask", "labels", "pixel_values", "position_ids")


def _keep_rows_up_to(path: Path, step: int) -> None:
    """Rewrite ``metrics.jsonl`` with only its whole rows of steps ``<= step``."""
    kept = []
    for line in path.read_bytes().split(b"\n"):
        try:
            row = json.loads(line)
        except ValueError:  # blank, or torn by a kill
            continue
        if isinstance(row, dict) and isinstance(row.get("step"), int) and row["step"] <= step:
            kept.append(json.dumps(row) + "\n")
    tmp = path.with_suffix(".jsonl.tmp")
    tmp.write_text("".join(kept), encoding="utf-8")
    os.replace(tmp, path)


class _MetricsLog:
    """``metrics.jsonl`` on the main process, mirrored to TensorBoard when it is installed. A resumed
    run first drops the rows after its checkpoint's step (they are logged again), so no step repeats."""

    def __init__(self, out: Path, enabled: bool, resumed_step: int = 0):
        self.enabled = enabled
        self.handle = None
        self.board = None
        if not enabled:
            return
        out.mkdir(parents=True, exist_ok=True)
        path = out / "metrics.jsonl"
        if path.is_file():
            _keep_rows_up_to(path, resumed_step)
        self.handle = open(path, "a", encoding="utf-8")  # noqa: SIM115 (closed in close())
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.board = SummaryWriter(str(out / "tensorboard"))
        except ImportError:
            self.board = None

    def write(self, row: dict) -> None:
        if not self.enabled:
            return
        self.handle.write(json.dumps(row) + "\n")
        self.handle.flush()
        if self.board is not None:
            for key, value in row.items():
                if key != "step":
                    self.board.add_scalar(f"train/{key}", value, row["step"])

    def close(self) -> None:
        if self.handle:
            self.handle.close()
        if self.board is not None:
            self.board.close()


def train(config: TrainConfig, resume: bool = False, export: bool = True, **kwargs) -> TrainResult:
    """Build a :class:`Trainer`, train, and export a Hugging Face directory to ``output_dir/model``."""
    trainer = Trainer(config, resume=resume, **kwargs)
    result = trainer.train()
    if export:
        trainer.export()
    return result
