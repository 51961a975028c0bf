"""Training data: the weighted mix, length-grouped (or packed) micro-batches, an exact resume
position, and a count of every sample skipped and why."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator

from torch.utils.data import DataLoader

from medrega.data.augment import BoxAugment, augment_record
from medrega.data.collate import pack_samples, pad_collate
from medrega.data.dataset import JsonlDataset
from medrega.data.images import ImageLoadError, load_image
from medrega.data.loading import skip_reason
from medrega.data.mixing import MixedDataset
from medrega.data.records import RecordError
from medrega.data.sampling import LengthGroupedBatchSampler
from medrega.processing import SampleTooLongError

__all__ = ["TrainData", "EncodedDataset", "NoUsableSamplesError"]


class NoUsableSamplesError(RuntimeError):
    """Training cannot go on: sample after sample was skipped (too long, image unreadable, bad record)."""

_SKIPPABLE = (SampleTooLongError, ImageLoadError, RecordError)


class EncodedDataset:
    """Records -> processed samples; a sample that cannot be used (too long, image missing or
    corrupt, invalid record) becomes ``{"skipped": (kind, message)}`` so the loop can count it:
    ``kind`` is the error's class name, ``message`` names the record.

    Args:
        records: a map-style dataset of records.
        processor: encodes them.
        max_length: token budget per sample.
        augment: a :class:`~medrega.data.BoxAugment` applied to every image with its boxes, seeded by
            ``(seed, epoch, index)`` so that a resumed run sees the same crops.
        seed: the run's seed.
    """

    def __init__(self, records, processor, max_length: int, augment: BoxAugment | None = None, seed: int = 0):
        self.records = records
        self.processor = processor
        self.max_length = max_length
        self.augment = augment
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.records)

    def _augmented(self, record, index: int) -> dict:
        rng = random.Random(f"{self.seed}:{self.epoch}:{index}")
        images = [load_image(path).image for path in record.images]
        for k in range(len(images)):
            images[k], record, _ = augment_record(record, images[k], self.augment, rng, k)
        try:
            return self.processor.encode_conversation(record.conversation, images, box_scale=record.box_scale, max_length=self.max_length)
        except SampleTooLongError as err:
            raise SampleTooLongError(f"{record.location or record.id}: {err}") from None

    def __getitem__(self, index: int) -> dict:
        record = None
        try:
            record = self.records[index]
            if self.augment is not None and record.images:
                sample = self._augmented(record, index)
            else:
                sample = self.processor.encode_record(record, max_length=self.max_length)
        except _SKIPPABLE as err:
            kind = type(err).__name__
            message, where = f"{kind}: {err}", getattr(record, "location", None)
            return {"skipped": (kind, message if not where or where in message else f"{message} (record {where})")}
        return {"input_ids": sample["input_ids"], "labels": sample["labels"], "pixel_values": sample["pixel_values"]}


class TrainData:
    """Micro-batches for the training loop.

    Args:
        config: the :class:`~medrega.training.TrainConfig` (data mix, batch size, packing, seed).
        processor: encodes records.
        env: the process layout (rank / world size).
    """

    def __init__(self, config, processor, env):
        self.config = config
        self.env = env
        self.pad_id = processor.tokenizer.pad_token_id or 0
        parts = [
            (JsonlDataset(s.path, s.format, image_root=s.image_root, check_images=True, confine_images=s.confine_images, on_error="skip"), s.weight) for s in config.data
        ]
        self.datasets = [d for d, _ in parts]
        self.lengths = [d.token_lengths(processor.max_image_tokens) for d in self.datasets]  # estimates, per dataset
        self.mix = MixedDataset(parts, seed=config.seed)
        augment = BoxAugment(crop_prob=config.augment_crop_prob) if config.augment_crop_prob > 0 else None
        self.encoded = EncodedDataset(self.mix, processor, config.max_length, augment, config.seed)
        self.skip_counts: Counter = Counter()
        self._counted: set[str] = set()  # skip messages already counted (they name the record)
        for dataset in self.datasets:
            self.skip_counts.update(skip_reason(e) for e in dataset.skipped)
        self.epoch = 0
        self.position = 0  # micro-batches of this epoch handed to the loop

    def _sampler(self) -> LengthGroupedBatchSampler:
        self.mix.set_epoch(self.epoch)
        self.encoded.epoch = self.epoch
        sampler = LengthGroupedBatchSampler(
            self.mix.gather(self.lengths),
            self.config.micro_batch_size,
            world_size=self.env.world_size,
            rank=self.env.rank,
            seed=self.config.seed,
            group_by_length=self.config.group_by_length,
        )
        sampler.load_state_dict({**sampler.state_dict(), "epoch": self.epoch, "position": self.position})
        return sampler

    def _collate(self, samples: list[dict]) -> dict:
        good = [s for s in samples if "skipped" not in s]
        skipped = [s["skipped"] for s in samples if "skipped" in s]
        if not good:
            return {"num_samples": 0, "skipped": skipped}
        if self.config.packing:
            batch = pack_samples(good, self.config.max_length, pad_token_id=self.pad_id)
        else:
            batch = pad_collate(good, self.pad_id)
        batch["skipped"] = skipped
        return batch

    def batches(self) -> Iterator[dict]:
        """Endless micro-batches from the saved position on, epoch after epoch.

        Raises:
            NoUsableSamplesError: ``config.max_consecutive_skips`` samples in a row (or a whole epoch)
                could not be encoded; the message counts them by reason.
        """
        failing: Counter = Counter()  # skip reasons since the last usable sample
        limit = self.config.max_consecutive_skips
        while True:
            yielded, from_start = False, self.position == 0  # a resumed epoch may have nothing left
            sampler = self._sampler()
            loader = DataLoader(
                self.encoded,
                batch_sampler=sampler,
                collate_fn=self._collate,
                num_workers=self.config.num_workers,
                persistent_workers=False,
            )
            for batch in loader:
                self.position += 1
                skipped = batch.pop("skipped")
                for kind, message in skipped:  # once per record, however often it is drawn
                    if message not in self._counted:
                        self._counted.add(message)
                        self.skip_counts[kind] += 1
                if batch["num_samples"]:
                    failing.clear()
                    yielded = True
                    yield batch
                    continue
                failing.update(kind for kind, _ in skipped)
                if sum(failing.values()) >= limit:
                    raise NoUsableSamplesError(self._failure(failing, f"{limit} samples in a row"))
            if from_start and not yielded:
                raise NoUsableSamplesError(self._failure(failing, f"a whole epoch ({sum(failing.values())} samples)"))
            self.epoch += 1
            self.position = 0

    def _failure(self, reasons: Counter, span: str) -> str:
        counts = ", ".join(f"{n} x {reason}" for reason, n in reasons.most_common()) or "no samples at all"
        return f"{span} could not be used for training ({counts}); check max_length and the images, see TrainData.skipped()"

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])

    def skipped(self) -> dict[str, int]:
        """Skipped samples by reason (at load time and during training)."""
        return dict(self.skip_counts)
