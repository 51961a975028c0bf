"""``Result``: what every :class:`~medrega.inference.Assistant` call returns, and how it draws itself."""

from __future__ import annotations

import dataclasses
import io
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from medrega.grounding import Grounding
from medrega.inference.draw import draw_groundings

__all__ = ["Result", "to_jsonable"]


def to_jsonable(value: Any) -> Any:
    """Dataclasses, tuples and nested containers -> plain JSON types (``Grounding`` via its ``to_dict``)."""
    if isinstance(value, Grounding):
        return value.to_dict()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    return value


@dataclass
class Result:
    """One answer of the assistant about one image or a set of images.

    Args:
        task: the task that produced it (``"detection"``, ``"report"``, ...).
        text: the answer without region markup.
        groundings: phrases with boxes in pixels of the original image(s); ``image_index`` picks the image.
        images: the original images (RGB) the answer is about, used for drawing.
        raw_text: the model's output with its region markup.
        answer: the task's parsed answer (a letter's option, a report's sections, ...), or ``None``.
        problems: malformed region markup that was skipped while reading the output.
        lang: ``"en"`` or ``"zh"``.
        query: what was asked (phrases, box, question, options).
        not_found: detection: the phrases asked for that the answer says the image does not contain
            (``<ref>nodule</ref>: not found.`` / ``<ref>结节</ref>：未发现。``), as asked, in query order;
            a phrase the answer also boxes is not listed. Empty for the other tasks.
    """

    task: str
    text: str
    groundings: list[Grounding] = field(default_factory=list)
    images: list[Image.Image] = field(default_factory=list, repr=False)
    raw_text: str = ""
    answer: Any = None
    problems: list[str] = field(default_factory=list)
    lang: str = "en"
    query: dict = field(default_factory=dict)
    not_found: list[str] = field(default_factory=list)

    @property
    def found(self) -> bool:
        """Whether the answer holds any region (``False`` for a detection that found nothing; see
        ``not_found`` for which phrases it says are absent)."""
        return any(g.boxes for g in self.groundings)

    @property
    def image_sizes(self) -> list[tuple[int, int]]:
        """``(width, height)`` of every original image."""
        return [im.size for im in self.images]

    def to_dict(self) -> dict:
        """A JSON-ready dict (the images themselves are left out; their sizes are kept)."""
        return {
            "task": self.task,
            "text": self.text,
            "raw_text": self.raw_text,
            "groundings": [g.to_dict() for g in self.groundings],
            "found": self.found,
            "not_found": list(self.not_found),
            "answer": to_jsonable(self.answer),
            "problems": list(self.problems),
            "lang": self.lang,
            "query": to_jsonable(self.query),
            "image_sizes": [list(s) for s in self.image_sizes],
        }

    def draw(self, **kwargs) -> Image.Image:
        """The images with boxes and phrases (see :func:`~medrega.inference.draw.draw_groundings` for ``kwargs``)."""
        if not self.images:
            raise ValueError(f"this {self.task} result holds no image to draw on")
        return draw_groundings(self.images, self.groundings, **kwargs)

    def show(self, display: bool = True, **kwargs) -> Image.Image:
        """Draw the result; inside a notebook also display it.

        Args:
            display: display the drawing when running under IPython.
            **kwargs: drawing options (see :func:`~medrega.inference.draw.draw_groundings`).

        Returns:
            The drawing as a PIL image (``result.show().save("out.png")``).
        """
        image = self.draw(**kwargs)
        if display:
            try:
                from IPython import get_ipython
                from IPython.display import display as ipython_display
            except ImportError:
                return image
            if get_ipython() is not None:
                ipython_display(image)
        return image

    def _repr_png_(self) -> bytes | None:
        """PNG of the drawing, for notebooks."""
        if not self.images:
            return None
        buffer = io.BytesIO()
        self.draw().save(buffer, format="PNG")
        return buffer.getvalue()

    def __str__(self) -> str:
        return self.text
