"""Shared set-up of the speed benchmarks: one model in two implementations with the same weights.

* ``ours``: :class:`~medrega.MedRegAForConditionalGeneration` with a Hugging Face CLIP tower, a 2-layer
  GELU projector and a Llama (the LLaVA layout), processor built from its config and the tiny
  preset's tokenizer (region tokens included).
* ``r1``: transformers' ``LlavaForConditionalGeneration`` of the same sizes; its weights are copied
  into ``ours`` through the real key map (:data:`medrega.models.LLAVA_KEY_MAPPING`).

Sizes: ``quick`` / ``cpu`` for the 2-core CPU, ``gpu`` a ~0.6 B configuration (random weights) for a GPU.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

SIZES = {
    "quick": {"hidden": 128, "layers": 2, "vision_width": 64, "vision_layers": 2, "vocab": 8192, "samples": 24, "batch": 8, "rounds": 2},
    "cpu": {"hidden": 256, "layers": 4, "vision_width": 192, "vision_layers": 4, "vocab": 32000, "samples": 64, "batch": 8, "rounds": 3},
    "gpu": {"hidden": 1536, "layers": 16, "vision_width": 768, "vision_layers": 12, "vocab": 32000, "samples": 256, "batch": 16, "rounds": 3},
}


def build_pair(size: dict, device: str = "cpu", dtype: torch.dtype = torch.float32, seed: int = 0):
    """``(ours, r1, processor)`` with identical weights (eval mode, on ``device``)."""
    from medrega import presets
    from medrega.grounding import IMAGE_TOKEN, LocTokenCodec
    from medrega.models import LLAVA_KEY_MAPPING, MedRegAConfig, MedRegAForConditionalGeneration, convert_state_dict
    from medrega.processing import IM_END, MedRegAProcessor

    tokenizer = presets.tiny_tokenizer()
    image_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    hidden, vw = size["hidden"], size["vision_width"]
    text = LlamaConfig(
        vocab_size=max(len(tokenizer), size["vocab"]),  # rows past the tokenizer are never seen, as in padded real vocabularies
        hidden_size=hidden,
        intermediate_size=4 * hidden,
        num_hidden_layers=size["layers"],
        num_attention_heads=max(1, hidden // 64),
        num_key_value_heads=max(1, hidden // 64),
        max_position_embeddings=4096,
        tie_word_embeddings=False,
    )
    vision = CLIPVisionConfig(
        hidden_size=vw, intermediate_size=4 * vw, num_hidden_layers=size["vision_layers"], num_attention_heads=max(1, vw // 64), image_size=64, patch_size=16, projection_dim=vw
    )
    torch.manual_seed(seed)
    llava_cfg = LlavaConfig(
        vision_config=vision, text_config=text, image_token_id=image_id, image_seq_length=16, vision_feature_layer=-1, vision_feature_select_strategy="default"
    )
    r1 = LlavaForConditionalGeneration(llava_cfg)
    codec = LocTokenCodec()
    ours_cfg = MedRegAConfig(
        vision_config=vision,
        text_config=text,
        image_token_id=image_id,
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
        region_codec=codec.to_config(),
    )
    ours = MedRegAForConditionalGeneration(ours_cfg)
    ours.load_state_dict(convert_state_dict(r1.state_dict(), LLAVA_KEY_MAPPING), strict=True)
    eos = [tokenizer.convert_tokens_to_ids(IM_END), tokenizer.eos_token_id]
    for model in (ours, r1):
        model.generation_config.eos_token_id = eos
        model.generation_config.pad_token_id = tokenizer.pad_token_id
        model.to(device=device, dtype=dtype).eval()
    processor = MedRegAProcessor.from_model_config(ours.config, tokenizer)
    return ours, r1, processor


def phantom_records(n_phantoms: int, tmp: str, seed: int = 0):
    from medrega.builders.phantom_records import make_phantom_dataset
    from medrega.data import load_records

    path = make_phantom_dataset(tmp, n_phantoms, seed=seed)
    return path, load_records(path)


def text_only(record):
    """The record without its images (a 0-image sample): ``<image>`` placeholders removed."""
    turns = [dataclasses.replace(t, content=t.content.replace("<image>\n", "").replace("<image>", "")) for t in record.conversation]
    return turns


def padding_heavy_mix(processor, n_samples: int, tmp: str | None = None, seed: int = 0):
    """Encoded samples: short closed-VQA / identification / classification answers next to long
    grounded reports and reports, 2-image comparisons, and text-only questions (0 images).

    Returns ``(samples, jsonl_path)``.
    """
    tmp = tmp or tempfile.mkdtemp()
    path, records = phantom_records(max(1, n_samples // 10 + 1), tmp, seed)
    by_task: dict[str, list] = {}
    for r in records:
        by_task.setdefault(r.task, []).append(r)
    # per 10 samples: 3 short answers, 3 long reports, 2 two-image, 1 detection, 1 text-only
    plan = ["vqa", "grounded_report", "identification", "report", "multi_image", "classification", "grounded_report", "detection", "multi_image", "text"]
    samples, cursor = [], {}
    while len(samples) < n_samples:
        task = plan[len(samples) % len(plan)]
        source = "vqa" if task == "text" else task
        k = cursor.get(task, 0)
        cursor[task] = k + 1
        record = by_task[source][k % len(by_task[source])]
        if task == "text":
            s = processor.encode_conversation(text_only(record), [], box_scale=record.box_scale)
        else:
            s = processor.encode_record(record)
        samples.append({"input_ids": s["input_ids"], "labels": s["labels"], "pixel_values": s["pixel_values"]})
    return samples, path


def sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def matmul_flops_per_s(device="cpu", dtype=torch.float32, n: int | None = None, reps: int = 3) -> float:
    """The machine's dense rate: best of ``reps`` ``n x n`` matmuls (n: 2048 on a CPU, 8192 on a GPU)."""
    n = n or (8192 if torch.device(device).type == "cuda" else 2048)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    sync(device)
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        a @ b
        sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


class PeakTensorBytes(TorchDispatchMode):
    """Peak bytes of live tensor storages while active, counting ``existing`` tensors from the start.

    Every op's outputs pass through ``__torch_dispatch__`` (the backward pass too); a storage counts
    from its first appearance until torch frees it (a weakref finaliser on the storage object)."""

    def __init__(self, existing=()):
        super().__init__()
        self.live: dict[int, int] = {}
        self.current = self.peak = 0
        for t in existing:
            self._add(t)

    def _add(self, t) -> None:
        st = t.untyped_storage()
        key = st._cdata
        if key in self.live:
            return
        self.live[key] = st.nbytes()
        self.current += st.nbytes()
        self.peak = max(self.peak, self.current)
        weakref.finalize(st, self._free, key)

    def _free(self, key) -> None:
        self.current -= self.live.pop(key, 0)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor) and t.device.type != "meta":
                self._add(t)
        return out
