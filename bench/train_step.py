"""Training throughput and peak memory: medrega's default step against transformers' LLaVA (R1, R2).

Same weights (LLaVA's copied into medrega through ``LLAVA_KEY_MAPPING``), same samples, same fused AdamW
(``medrega.training.optim.adamw``, lr 1e-4, grad-norm clip 1.0 on both sides), frozen vision tower on both
sides (medrega's default ``instruction`` stage), measured in this process, configurations alternated
round by round. The losses of one batch are asserted equal across all paths before any timing.

* ``medrega``: :class:`medrega.training.Trainer.loss_step` with the default config (length-grouped
  padded micro-batches, label-only LM head, flushed denormals on the CPU).
* ``medrega_packed``: the same with ``packing=True`` (transformers' block-diagonal mask).
* ``medrega_packed_segments``: packed rows with segment attention (one causal SDPA per packed sample,
  ``medrega.models.segment_attention``).
* ``medrega_compiled`` (with ``--compile``): the default step with ``compile=True`` (``torch.compile`` of
  the repeated blocks) on a copy of the same weights; ``compile_s`` is its first pass's extra time.
* ``r1``: ``LlavaForConditionalGeneration``, random-order batches padded to the longest, full-vocabulary
  logits, ``loss.backward()``.
* ``r2_flat``: R1 padding-free with ``DataCollatorWithFlattening`` (position ids restart per sample,
  ``use_cache=False``; pixel_values concatenated in sample order, which LLaVA accepts).
* ``r2_grouped``: R1 with medrega's length-grouped batches. ``*_r2`` ratios take the faster of the two.

Peak memory: torch's ``MemTracker`` (``torch.distributed._tools.mem_tracker``) on the CPU, which counts
every tensor torch allocates (parameters, gradients, optimizer state, activations, temporaries) during
one step on each configuration's largest batch; ``torch.cuda.max_memory_allocated`` on a GPU.

FLOPs (``mfu``, ``useful_mfu``) divide by a large matmul's FLOP/s measured in this run. Training FLOPs per
sequence of T tokens: 6 N T + 6 L d T^2 (causal attention) for the language model, 6 V d per position
given to the LM head, 4 N_proj per image token for the projector (no input gradient) and a forward pass
(2 N P + 2 L d P^2) for the frozen tower. ``mfu`` counts what each step's shapes compute (padding, all
head positions); ``useful_mfu`` only real tokens and label positions (the same numerator for every path).

    python bench/train_step.py --quick                 # tiny sizes, < 1 minute on a 2-core CPU
    python bench/train_step.py                         # 22 M parameters, 64 samples
    python bench/train_step.py --size gpu --device cuda --dtype bf16   # or bench/gpu.sh: every GPU benchmark
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import SIZES, PeakTensorBytes, build_pair, matmul_flops_per_s, padding_heavy_mix, sync  # noqa: E402

from medrega.data import pack_samples, pad_collate  # noqa: E402
from medrega.data.collate import IGNORE_INDEX  # noqa: E402
from medrega.data.sampling import LengthGroupedBatchSampler  # noqa: E402
from medrega.models.segment_attention import SEGMENT_ATTENTION  # noqa: E402
from medrega.training.config import DataSource, TrainConfig  # noqa: E402
from medrega.training.optim import adamw  # noqa: E402
from medrega.training.trainer import Trainer  # noqa: E402


def _flatten(samples):
    from transformers import DataCollatorWithFlattening

    batch = DataCollatorWithFlattening(return_tensors="pt")([{"input_ids": s["input_ids"].tolist(), "labels": s["labels"].tolist()} for s in samples])
    pixels = [s["pixel_values"] for s in samples if s["pixel_values"].numel()]
    batch["pixel_values"] = torch.cat(pixels) if pixels else None
    return dict(batch)


def _state_tensors(optimizer):
    return [v for state in optimizer.state.values() for v in state.values() if isinstance(v, torch.Tensor)]


class Flops:
    def __init__(self, cfg, size, image_tokens):
        text = cfg.text_config
        self.d, self.layers, self.vocab = text.hidden_size, text.num_hidden_layers, text.vocab_size
        d, f = self.d, text.intermediate_size
        self.n_body = self.layers * (4 * d * d + 3 * d * f)
        vw = cfg.vision_config.hidden_size
        self.patches = (cfg.vision_config.image_size // cfg.vision_config.patch_size) ** 2 + 1
        self.n_vision = cfg.vision_config.num_hidden_layers * (4 * vw * vw + 2 * vw * cfg.vision_config.intermediate_size)
        self.vision_layers, self.vw = cfg.vision_config.num_hidden_layers, vw
        self.n_proj = vw * d + d * d
        self.image_tokens = image_tokens

    def seq(self, t):
        return 6 * self.n_body * t + 6 * self.layers * self.d * t * t

    def head(self, positions):
        return 6 * self.vocab * self.d * positions

    def images(self, n):
        p = self.patches
        return n * (2 * self.n_vision * p + 2 * self.vision_layers * self.vw * p * p + 4 * self.n_proj * self.image_tokens)


def _profile(name, step, batches, device) -> None:
    """One pass over ``batches`` under torch.profiler: wall time, device-busy time, top operators."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    sync(device)
    start = time.perf_counter()
    with profile(activities=activities) as prof:
        for batch in batches:
            step(batch)
        sync(device)
    wall = time.perf_counter() - start
    events = prof.key_averages()
    print(f"profile[{name}]: wall_s={wall:.3f} steps={len(batches)}")
    if device.type == "cuda":
        busy = sum(e.self_device_time_total for e in events) / 1e6
        print(f"profile[{name}]: device_busy_s={busy:.3f} device_busy_share={busy / wall:.2f}")
        print(events.table(sort_by="self_device_time_total", row_limit=12))
    print(events.table(sort_by="self_cpu_time_total", row_limit=15))


def _labels(s):
    return int((s["labels"][1:] != IGNORE_INDEX).sum())


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (under a minute on a 2-core CPU)")
    parser.add_argument("--size", choices=sorted(SIZES), default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--batch", type=int, default=None, help="micro-batch size (default: the size's)")
    parser.add_argument("--compile", action="store_true", help="also time the default step with compile=True")
    parser.add_argument("--profile", nargs="*", default=None, metavar="PATH", help="after timing, print torch.profiler's top operators of one pass of these paths (default: medrega r2_grouped)")
    args = parser.parse_args(argv)
    T0 = time.perf_counter()
    size = dict(SIZES[args.size or ("quick" if args.quick else "cpu")])
    rounds = args.rounds or size["rounds"]
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    device = torch.device(args.device)
    tmp = tempfile.mkdtemp()
    ours, r1, processor = build_pair(size, device, dtype)
    samples, jsonl = padding_heavy_mix(processor, size["samples"], tmp)
    lengths = [len(s["input_ids"]) for s in samples]
    pad_id = processor.tokenizer.pad_token_id or 0
    b = args.batch or size["batch"]

    grouped = list(LengthGroupedBatchSampler(lengths, b, seed=0, group_by_length=True))
    random_order = list(LengthGroupedBatchSampler(lengths, b, seed=0, group_by_length=False))

    print(f"setup_s: {time.perf_counter() - T0:.1f}", file=sys.stderr)

    def pick(order):
        return [[samples[i] for i in idx] for idx in order]

    config = TrainConfig(data=(DataSource(str(jsonl)),), output_dir=str(Path(tmp) / "out"), max_steps=10**6, warmup_steps=0, precision=args.dtype)
    compiled = copy.deepcopy(ours) if args.compile else None  # same weights, before any step
    trainer = Trainer(config, model=ours, processor=processor, progress=False)
    trainers = {"medrega": trainer}
    if compiled is not None:
        trainers["medrega_compiled"] = Trainer(dataclasses.replace(config, compile=True), model=compiled, processor=processor, progress=False)
    packed_trainer_batches = [pack_samples(g, config.max_length, pad_token_id=pad_id) for g in pick(grouped)]
    medrega_batches = [pad_collate(g, pad_id) for g in pick(grouped)]

    r1.train()
    for p in r1.model.vision_tower.parameters():
        p.requires_grad_(False)
    r1_opt = adamw([{"params": [p for p in r1.parameters() if p.requires_grad], "lr": config.lr}])
    r1_batches = [pad_collate(g, pad_id) for g in pick(random_order)]
    r2_flat_batches = [_flatten(g) for g in pick(random_order)]
    r2_grouped_batches = [pad_collate(g, pad_id) for g in pick(grouped)]
    keys = ("input_ids", "attention_mask", "labels", "pixel_values", "position_ids")

    def r1_step(batch):
        inputs = {k: v.to(device) for k, v in batch.items() if k in keys and v is not None}
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(dtype)
        if inputs.get("pixel_values") is not None and inputs["pixel_values"].shape[0] == 0:
            inputs.pop("pixel_values")
        loss = r1(**inputs, use_cache=False).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(r1.parameters(), config.max_grad_norm)
        r1_opt.step()
        r1_opt.zero_grad(set_to_none=True)
        return loss

    def use(name):  # the attention of the path about to run (a per-forward setting of the same model)
        trainer.model.language_model.set_attn_implementation(SEGMENT_ATTENTION if name == "medrega_packed_segments" else "sdpa")

    # -- equal losses on one batch, before any step ----------------------------------------------------
    first = pick(random_order)[0]
    with torch.no_grad():
        losses = {}
        inp = {k: v.to(device) for k, v in pad_collate(first, pad_id).items() if k in keys}
        inp["pixel_values"] = inp["pixel_values"].to(dtype)
        losses["medrega"] = float(trainer.model(**inp).loss)
        packed = {k: v.to(device) for k, v in pack_samples(first, config.max_length, pad_token_id=pad_id).items() if k in keys and v is not None}
        packed["pixel_values"] = packed["pixel_values"].to(dtype)
        losses["medrega_packed"] = float(trainer.model(**packed).loss)
        use("medrega_packed_segments")
        losses["medrega_packed_segments"] = float(trainer.model(**packed).loss)
        use("medrega")
        if compiled is not None:
            losses["medrega_compiled"] = float(compiled(**inp).loss)
        losses["r1"] = float(r1(**inp, use_cache=False).loss)
        flat = {k: v.to(device) for k, v in _flatten(first).items() if v is not None}
        flat["pixel_values"] = flat["pixel_values"].to(dtype)
        losses["r2_flat"] = float(r1(**flat, use_cache=False).loss)
    tol = 1e-4 if dtype == torch.float32 else 2e-2
    for name, value in losses.items():
        assert abs(value - losses["r1"]) <= tol * max(1.0, abs(losses["r1"])), f"loss of {name} {value} differs from R1's {losses['r1']}"
    print("start_losses: " + " ".join(f"{k}={v:.6f}" for k, v in losses.items()))

    paths = {
        "medrega": (lambda batch: trainer.loss_step([batch]), medrega_batches),
        "medrega_packed": (lambda batch: trainer.loss_step([batch]), packed_trainer_batches),
        "medrega_packed_segments": (lambda batch: trainer.loss_step([batch]), packed_trainer_batches),
        "r1": (r1_step, r1_batches),
        "r2_flat": (r1_step, r2_flat_batches),
        "r2_grouped": (r1_step, r2_grouped_batches),
    }
    if compiled is not None:
        paths["medrega_compiled"] = (lambda batch: trainers["medrega_compiled"].loss_step([batch]), medrega_batches)
    warmup = {}
    for name, (step, batches) in paths.items():  # warm-up (allocates the optimizer state; the compiled path compiles)
        use(name)
        sync(device)
        start = time.perf_counter()
        for batch in batches if name == "medrega_compiled" else batches[:1]:
            step(batch)
        sync(device)
        warmup[name] = time.perf_counter() - start
    times = {name: [] for name in paths}
    names = list(paths)
    for k in range(rounds):
        for name in names[k % len(names) :] + names[: k % len(names)]:
            step, batches = paths[name]
            use(name)
            sync(device)
            start = time.perf_counter()
            for batch in batches:
                step(batch)
            sync(device)
            times[name].append(time.perf_counter() - start)
    print(f"timed_s: {time.perf_counter() - T0:.1f}", file=sys.stderr)
    if args.profile is not None:
        for name in args.profile or ["medrega", "r2_grouped"]:
            use(name)
            _profile(name, *paths[name], device)
    seconds = {name: statistics.median(t) for name, t in times.items()}

    # -- peak memory of one step on each path's largest batch --------------------------------------------
    peaks = {}
    for name, (step, batches) in paths.items():
        use(name)
        largest = max(batches, key=lambda x: x["input_ids"].numel())
        owner = trainers.get(name, trainer)
        model = owner.model if name.startswith("medrega") else r1
        optimizer = owner.optimizer if name.startswith("medrega") else r1_opt
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
            step(largest)
            peaks[name] = torch.cuda.max_memory_allocated()
            continue
        existing = [*model.parameters(), *(p.grad for p in model.parameters() if p.grad is not None), *_state_tensors(optimizer)]
        with PeakTensorBytes(existing) as tracker:
            step(largest)
        peaks[name] = tracker.peak

    # -- FLOPs --------------------------------------------------------------------------------------------
    flops = Flops(ours.config, size, ours.config.num_image_tokens)
    n_images = sum(s["pixel_values"].shape[0] for s in samples)
    label_tokens = sum(_labels(s) for s in samples)
    useful = sum(flops.seq(n) for n in lengths) + flops.head(label_tokens) + flops.images(n_images)

    def executed(name):
        batches = paths[name][1]
        if name.startswith("medrega_packed") or name == "r2_flat":
            body = sum(flops.seq(len(s["input_ids"])) for s in samples)
        else:
            body = sum(bt["input_ids"].shape[0] * flops.seq(bt["input_ids"].shape[1]) for bt in batches)
        head_positions = label_tokens if name.startswith("medrega") else sum(bt["input_ids"].numel() for bt in batches)
        return body + flops.head(head_positions) + flops.images(n_images)

    peak_rate = max(matmul_flops_per_s(device, dtype), matmul_flops_per_s(device, dtype))
    padding = sum(bt["num_padding_tokens"] for bt in r1_batches) / sum(bt["input_ids"].numel() for bt in r1_batches)
    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in trainer.model.parameters())
    print(f"device: {device} threads: {torch.get_num_threads()} dtype: {args.dtype}")
    print(f"parameters: {total} trainable: {trainable} vocab: {ours.config.text_config.vocab_size}")
    print(f"samples: {len(samples)} micro_batch: {b} images: {n_images} label_tokens: {label_tokens} r1_padding_share: {padding:.3f} rounds: {rounds}")
    print(f"matmul_gflops: {peak_rate / 1e9:.1f}")
    result = {}
    for name in paths:
        s = seconds[name]
        result[name] = {"samples_per_s": len(samples) / s, "tokens_per_s": label_tokens / s, "peak_mib": peaks[name] / 2**20, "mfu": executed(name) / s / peak_rate, "useful_mfu": useful / s / peak_rate}
        r = result[name]
        print(f"{name}: samples_per_s={r['samples_per_s']:.2f} label_tokens_per_s={r['tokens_per_s']:.1f} peak_mib={r['peak_mib']:.1f} mfu={r['mfu']:.3f} useful_mfu={r['useful_mfu']:.3f}")
    r2 = "r2_flat" if seconds["r2_flat"] <= seconds["r2_grouped"] else "r2_grouped"
    print(f"r2_is: {r2}")
    if compiled is not None:
        print(f"compile_s: {warmup['medrega_compiled'] - seconds['medrega_compiled']:.1f}")
    for option, suffix in (("medrega", ""), ("medrega_packed", "_packed"), ("medrega_packed_segments", "_packed_segments"), ("medrega_compiled", "_compiled")):
        if option not in paths:
            continue
        print(f"train_tokens_per_s_ratio{suffix}: {seconds['r1'] / seconds[option]:.2f}")
        print(f"train_tokens_per_s_ratio_r2{suffix}: {seconds[r2] / seconds[option]:.2f}")
        print(f"peak_memory_ratio{suffix}: {peaks[option] / peaks['r1']:.2f}")
        print(f"mfu{suffix}: {result[option]['mfu']:.3f}")
        print(f"useful_mfu{suffix}: {result[option]['useful_mfu']:.3f}")
    return result


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
