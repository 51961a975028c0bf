"""Sample records: medrega's own JSONL format and its validation.

One JSON object per line::

    {"id": "chest-0001",
     "images": ["scans/0001.png"],                 # relative to the JSONL file; DICOM allowed
     "image_sizes": [[1024, 1024]],                 # optional (width, height) of each image
     "conversation": [
        {"role": "user", "content": "<image>\\nPlease locate <ref>left lung</ref>."},
        {"role": "assistant", "content": "<ref>left lung</ref><box>[[512, 90, 930, 880]]</box>"}],
     "box_scale": 1000,                             # coordinates in the text are on 0..box_scale
     "lang": "en", "task": "detection",
     "modality": "X-ray", "area": "Chest", "mat_task": "Pneumonia classification",
     "source": "my-dataset"}

Region markup in the conversation is the InternVL text form (:class:`~medrega.grounding.TextBoxCodec`)
on ``0..box_scale`` relative to the original image; the processor rewrites it into the model's
codec. ``Record.groundings`` holds the assistant's groundings in original-image pixels when the
image sizes are known. Every ``<image>`` in user turns pairs, in order, with one entry of ``images``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from medrega.answers import has_cjk
from medrega.grounding import DEFAULT_BOX_SCALE, IMAGE_TOKEN, Grounding, GroundingParseError, TextBoxCodec

__all__ = ["Turn", "Record", "RecordError", "ROLES", "detect_lang"]

ROLES = ("system", "user", "assistant")


class RecordError(ValueError):
    """A record that breaks the format; the message names the file, line and field."""

    def __init__(self, source: str, line: int | None, field: str, reason: str):
        self.source, self.line, self.field, self.reason = source, line, field, reason
        where = f"{source}:{line}" if line is not None else source
        super().__init__(f"{where}: field {field!r}: {reason}")


def detect_lang(text: str) -> str:
    """``"zh"`` when the text holds Chinese characters, else ``"en"``."""
    return "zh" if has_cjk(text) else "en"


@dataclass
class Turn:
    """One message of a conversation: ``role`` is ``system``, ``user`` or ``assistant``."""

    role: str
    content: str


@dataclass
class Record:
    """One training or evaluation sample.

    Args:
        id: the id given by the source (not necessarily unique).
        images: image paths, absolute or relative to the current directory once loaded.
        conversation: turns with ``<image>`` placeholders in user turns.
        groundings: the assistant's groundings in original-image pixels (when sizes are known).
        image_sizes: ``(width, height)`` per image, when known.
        box_scale: coordinates in the conversation text are integers on ``0..box_scale``.
        lang: ``"en"`` or ``"zh"``.
        task: task name (see :mod:`medrega.tasks`), or ``None``.
        modality, area, mat_task: Med-MAT tags.
        source: dataset name; ``meta``: anything else the source carried.
        location: ``"file:line"`` where the record was read.
    """

    id: str
    images: list[str]
    conversation: list[Turn]
    groundings: list[Grounding] = field(default_factory=list)
    image_sizes: list[tuple[int, int]] | None = None
    box_scale: int = DEFAULT_BOX_SCALE
    lang: str = "en"
    task: str | None = None
    modality: str | None = None
    area: str | None = None
    mat_task: str | None = None
    source: str | None = None
    meta: dict = field(default_factory=dict)
    location: str = ""

    @property
    def prompt(self) -> str:
        """The first user turn."""
        return next(t.content for t in self.conversation if t.role == "user")

    @property
    def answer(self) -> str:
        """The last assistant turn ("" when there is none)."""
        return next((t.content for t in reversed(self.conversation) if t.role == "assistant"), "")

    def to_dict(self) -> dict:
        """The record in medrega's JSONL format (image paths as stored)."""
        out = {
            "id": self.id,
            "images": list(self.images),
            "conversation": [{"role": t.role, "content": t.content} for t in self.conversation],
            "box_scale": self.box_scale,
            "lang": self.lang,
        }
        if self.image_sizes is not None:
            out["image_sizes"] = [list(s) for s in self.image_sizes]
        if self.groundings:
            out["groundings"] = [g.to_dict() for g in self.groundings]
        for key in ("task", "modality", "area", "mat_task", "source"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        if self.meta:
            out["meta"] = self.meta
        return out

    def validate(self, source: str = "<record>", line: int | None = None, check_images: bool = False) -> Record:
        """Check the record; raise :class:`RecordError` naming ``source``, ``line`` and the field.

        Fills ``groundings`` from the assistant's region markup when image sizes are known.
        """

        def fail(field_name: str, reason: str):
            raise RecordError(source, line, field_name, reason)

        if not self.conversation:
            fail("conversation", "empty conversation")
        for i, turn in enumerate(self.conversation):
            if turn.role not in ROLES:
                fail(f"conversation[{i}].role", f"unknown role {turn.role!r} (expected one of {', '.join(ROLES)})")
            if not isinstance(turn.content, str):
                fail(f"conversation[{i}].content", "content must be a string")
            if turn.role == "assistant" and not turn.content.strip():
                fail(f"conversation[{i}].content", "empty answer")
            if turn.role != "user" and IMAGE_TOKEN in turn.content:
                fail(f"conversation[{i}].content", f"{IMAGE_TOKEN} may only appear in user turns")
        if not any(t.role == "user" for t in self.conversation):
            fail("conversation", "no user turn")
        if not any(t.role == "assistant" for t in self.conversation):
            fail("conversation", "no assistant turn (nothing to train on or score against)")
        placeholders = sum(t.content.count(IMAGE_TOKEN) for t in self.conversation)
        if placeholders != len(self.images):
            fail("images", f"{placeholders} {IMAGE_TOKEN} placeholder(s) but {len(self.images)} image(s)")
        if self.image_sizes is not None:
            if len(self.image_sizes) != len(self.images):
                fail("image_sizes", f"{len(self.image_sizes)} size(s) for {len(self.images)} image(s)")
            for i, size in enumerate(self.image_sizes):
                if len(size) != 2 or min(size) <= 0:
                    fail(f"image_sizes[{i}]", f"not a positive (width, height): {size!r}")
        if self.lang not in ("en", "zh"):
            fail("lang", f"unknown language {self.lang!r} (expected 'en' or 'zh')")
        if check_images:
            for i, path in enumerate(self.images):
                if not Path(path).is_file():
                    fail(f"images[{i}]", f"image not found: {path}")
        # with unknown sizes, coordinates are still checked against 0..box_scale and their corner order
        sizes = self.image_sizes or [(self.box_scale, self.box_scale)] * max(1, len(self.images))
        codec = TextBoxCodec(scale=self.box_scale)
        for i, turn in enumerate(self.conversation):
            if "[" not in turn.content:  # no box in any form: nothing to parse
                continue
            if turn.role == "assistant":
                try:
                    parsed = codec.parse(turn.content, sizes, strict=True)
                except GroundingParseError as err:
                    fail(f"conversation[{i}].content", f"bad region markup: {err}")
                if self.image_sizes:
                    self.groundings = self.groundings or list(parsed)
            else:  # prompts may describe the format ("[[x1, y1, x2, y2]]"); only real boxes must be valid
                bad = [p for p in codec.parse(turn.content, sizes).problems if "outside" in p or "reversed" in p]
                if bad:
                    fail(f"conversation[{i}].content", f"bad region markup: {'; '.join(bad)}")
        for g in self.groundings:
            if self.images and not 0 <= g.image_index < len(self.images):
                fail("groundings", f"image_index {g.image_index} but {len(self.images)} image(s)")
            size = self.image_sizes[g.image_index] if self.image_sizes else None
            for box in g.boxes:
                x1, y1, x2, y2 = box
                if x1 >= x2 or y1 >= y2:
                    fail("groundings", f"box {list(box)} of {g.phrase!r} has reversed or equal corners (need x1 < x2, y1 < y2)")
                if min(box) < 0:
                    fail("groundings", f"box {list(box)} of {g.phrase!r} has a negative coordinate")
                if size is not None and not (x1 >= 0 and y1 >= 0 and x2 <= size[0] and y2 <= size[1]):
                    fail("groundings", f"box {list(box)} of {g.phrase!r} lies outside the image of size {size[0]}x{size[1]}")
        return self
