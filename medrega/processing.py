"""``MedRegAProcessor``: images + chat template + region codec -> ``input_ids``, ``pixel_values``, ``labels``.

The processor owns the token layout: it expands each ``<image>`` of the text into ``num_image_tokens``
ids of its ``image_token`` per tile (``<image>`` itself by default; InternVL / MedRegA checkpoints use
``<IMG_CONTEXT>``), wrapped per image in ``image_wrapper`` when set (InternVL: ``<img>`` ... ``</img>``), rewrites region markup of records (text boxes relative to the original image)
into the model's codec, masks labels to the assistant turns, and truncates prose only.
``post_process`` turns generated ids back into text and groundings in original-image pixels.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from transformers import BatchFeature, GenerationConfig, ProcessorMixin
from transformers.processing_utils import ProcessingKwargs, Unpack

from medrega.data.collate import IGNORE_INDEX
from medrega.data.records import Record, Turn
from medrega.grounding import (
    BOX_END,
    BOX_START,
    DEFAULT_BOX_SCALE,
    IMAGE_TOKEN,
    REF_END,
    REF_START,
    AddedTokens,
    LocTokenCodec,
    ParseResult,
    RegionCodec,
    TextBoxCodec,
    codec_from_config,
)
from medrega.image_processing import MedRegAImageProcessor, PreparedImages

__all__ = [
    "MedRegAProcessor",
    "MedRegAImageProcessor",
    "SampleTooLongError",
    "Decoded",
    "CHAT_TEMPLATE",
    "HERMES2_CHAT_TEMPLATE",
    "MEDREGA_SYSTEM_PROMPT",
    "IM_START",
    "IM_END",
]

logger = logging.getLogger(__name__)

IM_START, IM_END = "<|im_start|>", "<|im_end|>"
_MESSAGE_CONTENT = (  # a string with <image> placeholders, or a Hugging Face content list
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}{{ '<image>\n' }}{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
)
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' }}"
    + _MESSAGE_CONTENT
    + "{{ '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
"""ChatML. A message's ``content`` is a string with ``<image>`` placeholders (medrega records) or a
Hugging Face content list (``{"type": "image"}`` becomes ``<image>`` and a line break, ``{"type": "text"}``
its text)."""

MEDREGA_SYSTEM_PROMPT = "Answer the questions."
HERMES2_CHAT_TEMPLATE = (
    "{% if messages and messages[0]['role'] == 'system' %}"
    "{% set system = messages[0]['content'] %}{% set messages = messages[1:] %}"
    "{% else %}{% set system = '" + MEDREGA_SYSTEM_PROMPT + "' %}{% endif %}"
    "{{ '<|im_start|>system\n' + system + '<|im_end|>' }}"
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' }}"
    + _MESSAGE_CONTENT
    + "{{ '<|im_end|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
"""InternVL-Chat's ``Hermes-2`` conversation as MedRegA uses it (``get_prompt()`` of its ``conversation.py``):
the system turn first (``"Answer the questions."`` unless the conversation starts with a system message), no
line break after ``<|im_end|>``:
``<|im_start|>system\nAnswer the questions.<|im_end|><|im_start|>user\n...<|im_end|><|im_start|>assistant\n``.
The system turn is rendered once, at the start, so every prefix of a conversation renders as a prefix of it
(what label placement needs)."""


class SampleTooLongError(ValueError):
    """A sample that cannot fit ``max_length`` without cutting an image run or a region."""


@dataclass
class Decoded:
    """One generated answer: ``text`` without region markup, the ``raw_text`` the model wrote, and
    ``groundings`` (a :class:`~medrega.grounding.ParseResult`, boxes in original-image pixels)."""

    text: str
    raw_text: str
    groundings: ParseResult = field(default_factory=ParseResult)

    def to_dict(self) -> dict:
        return {
            "text": self.text,
            "raw_text": self.raw_text,
            "groundings": [g.to_dict() for g in self.groundings],
            "problems": list(self.groundings.problems),
        }


class MedRegAProcessorKwargs(ProcessingKwargs, total=False):
    """Call arguments: ``text_kwargs`` takes ``padding_side`` (``"left"`` by default, for generation)
    and every call takes ``return_tensors``."""


_CALL_DOES = {"padding": (True, "longest"), "add_special_tokens": (False,)}
# transformers' pipelines forward generation options to the processor too; max_length would read as truncation here
_GENERATION_OPTIONS = frozenset(GenerationConfig().to_dict()) - {"max_length"}


def _call_options(kwargs: dict) -> dict:
    """The call's keyword arguments, groups (``text_kwargs``, ``common_kwargs``, ...) flattened; raises
    on any argument the processor would otherwise ignore."""
    options: dict = {}
    for key, value in kwargs.items():
        options.update(value if key.endswith("_kwargs") and isinstance(value, dict) else {key: value})
    unknown = sorted(set(options) - {"return_tensors", "padding_side", *_CALL_DOES} - _GENERATION_OPTIONS)
    if unknown:
        raise TypeError(f"MedRegAProcessor() got unsupported keyword argument(s) {unknown}: it takes return_tensors and padding_side (image settings are the image processor's, set at construction)")
    for key, allowed in _CALL_DOES.items():
        if options.get(key) not in (None, *allowed):
            raise ValueError(f"MedRegAProcessor() supports {key} in {allowed} only, got {options[key]!r}")
    return options


class MedRegAProcessor(ProcessorMixin):
    """Prepare MedRegA inputs, called like transformers' processors.

    Args:
        image_processor: a :class:`~medrega.image_processing.MedRegAImageProcessor` (built from
            ``image_size``, ``image_mean``, ... in ``kwargs`` when ``None``).
        tokenizer: a Hugging Face tokenizer that already holds the chat and region tokens
            (see :meth:`prepare_tokenizer`).
        chat_template: Jinja chat template (:data:`CHAT_TEMPLATE` by default), saved with the processor.
        num_image_tokens: placeholder tokens per image or tile (the model's ``config.num_image_tokens``).
        region_codec: the model's codec, e.g. ``{"type": "loc", "bins": 1000}``.
        max_length: token budget per sample for :meth:`encode_record`.
        image_token: the token whose id fills each image run (default ``<image>``; InternVL / MedRegA:
            ``<IMG_CONTEXT>``). Prompts always mark an image with ``<image>``; the tokenizer must hold
            ``image_token`` as one token (its id is the model's ``config.image_token_id``).
        image_wrapper: ``(start, end)`` tokens around each image's run, all tiles together (InternVL /
            MedRegA: ``("<img>", "</img>")``); ``None``: no wrapper.
        **kwargs: image settings when ``image_processor`` is ``None``.
    """

    valid_processor_kwargs = MedRegAProcessorKwargs

    def __init__(
        self,
        image_processor: MedRegAImageProcessor | None = None,
        tokenizer=None,
        chat_template: str | None = None,
        num_image_tokens: int = 64,
        region_codec: dict | None = None,
        max_length: int = 2048,
        image_token: str | None = None,
        image_wrapper: Sequence[str] | None = None,
        **kwargs,
    ):
        if tokenizer is None:
            raise ValueError("MedRegAProcessor needs a tokenizer")
        if image_processor is None:
            image_processor = MedRegAImageProcessor(**kwargs)
        elif kwargs:
            raise TypeError(f"image settings {sorted(kwargs)} belong to the image processor that was given")
        self.num_image_tokens = int(num_image_tokens)
        self.region_codec = dict(region_codec or LocTokenCodec().to_config())
        self.max_length = int(max_length)
        self.codec = codec_from_config(self.region_codec)
        self.image_token = image_token or IMAGE_TOKEN
        if image_wrapper is not None and (isinstance(image_wrapper, str) or len(image_wrapper) != 2 or not all(isinstance(t, str) and t for t in image_wrapper)):
            raise ValueError(f"image_wrapper must be two tokens (start, end) or None, got {image_wrapper!r}")
        self.image_wrapper = list(image_wrapper) if image_wrapper is not None else None
        super().__init__(image_processor, tokenizer, chat_template=chat_template or CHAT_TEMPLATE)
        needed = (IM_START, IM_END, self.image_token, *(self.image_wrapper or ()), BOX_START, BOX_END, REF_START, REF_END)
        vocab = tokenizer.get_vocab()
        missing = [t for t in needed if t not in vocab]
        if missing:
            raise ValueError(f"tokenizer lacks {missing}; call MedRegAProcessor.prepare_tokenizer(tokenizer) first (or give image_token/image_wrapper it holds)")
        self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
        self._wrapper_ids = [tokenizer.convert_tokens_to_ids(t) for t in self.image_wrapper] if self.image_wrapper else []
        self.im_end_id = tokenizer.convert_tokens_to_ids(IM_END)
        self._protect = (
            (tokenizer.convert_tokens_to_ids(BOX_START), tokenizer.convert_tokens_to_ids(BOX_END)),
            (tokenizer.convert_tokens_to_ids(REF_START), tokenizer.convert_tokens_to_ids(REF_END)),
        )

    @property
    def image_size(self) -> int:
        """Side of the square image the vision tower takes."""
        return self.image_processor.image_size

    @property
    def max_image_tokens(self) -> int:
        """Placeholder tokens one image takes at most: ``num_image_tokens`` per tile and thumbnail."""
        tiles = self.image_processor.max_tiles
        crops = tiles + self.image_processor.use_thumbnail if tiles > 1 else 1
        return crops * self.num_image_tokens + len(self._wrapper_ids)

    def save_pretrained(self, save_directory, **kwargs):
        """transformers' save (``processor_config.json`` holds the image processor), plus a standalone
        ``preprocessor_config.json`` for tools that read the image processor on its own."""
        saved = super().save_pretrained(save_directory, **kwargs)
        self.image_processor.save_pretrained(save_directory)
        return saved

    # -- construction -------------------------------------------------------------------------
    @staticmethod
    def prepare_tokenizer(tokenizer, codec: RegionCodec | None = None) -> AddedTokens:
        """Add the chat tokens (``<|im_start|>``, ``<|im_end|>``, special) and the codec's region
        tokens to ``tokenizer``; returns every token the model needs with its id."""
        before = len(tokenizer)
        tokenizer.add_special_tokens({"additional_special_tokens": [IM_START, IM_END]}, replace_extra_special_tokens=False)
        region = (codec or LocTokenCodec()).add_to_tokenizer(tokenizer)
        tokens = [IM_START, IM_END, *region.tokens]
        return AddedTokens(tokens, tokenizer.convert_tokens_to_ids(tokens), len(tokenizer) - before)

    @classmethod
    def from_model_config(cls, config, tokenizer, **kwargs) -> MedRegAProcessor:
        """A processor matching a :class:`~medrega.MedRegAConfig` (image size, tokens per image, codec)."""
        if config.num_image_tokens is None:
            raise ValueError(
                "config.num_image_tokens is not set: build the model first (it counts them) or set it to "
                "medrega.models.image_token_count(config)"
            )
        image_settings = {key: kwargs.pop(key) for key in ("resize_mode",) if key in kwargs}
        images = MedRegAImageProcessor(
            image_size=config.image_size,
            image_mean=config.image_mean,
            image_std=config.image_std,
            max_tiles=config.max_tiles,
            use_thumbnail=config.use_thumbnail,
            **image_settings,
        )
        return cls(images, tokenizer, num_image_tokens=config.num_image_tokens, region_codec=config.region_codec, **kwargs)

    # -- images -------------------------------------------------------------------------------
    def load_images(self, images: Sequence) -> tuple[PreparedImages, list[int]]:
        """Prepare ``images`` with the image processor; also the placeholder tokens each image needs
        (``num_image_tokens`` per crop: every tile and the thumbnail)."""
        prepared = self.image_processor.prepare(images)
        return prepared, [n * self.num_image_tokens for n in prepared.crops]

    # -- text ---------------------------------------------------------------------------------
    def render(self, turns: Sequence[Turn | dict], add_generation_prompt: bool = False) -> str:
        """The chat-template text of a conversation (``<image>`` placeholders not yet expanded)."""
        messages = [t if isinstance(t, dict) else {"role": t.role, "content": t.content} for t in turns]
        return self._render(messages, add_generation_prompt)

    def _render(self, messages: list[dict], add_generation_prompt: bool) -> str:
        from transformers.utils.chat_template_utils import render_jinja_template

        rendered, _ = render_jinja_template(conversations=[messages], chat_template=self.chat_template, add_generation_prompt=add_generation_prompt)
        return rendered[0]

    def _segments(self, turns: Sequence[Turn], add_generation_prompt: bool) -> tuple[list[tuple[str, bool]], str]:
        """Split the rendered conversation into ``(text, is_label)`` pieces, and the end-of-turn text
        of the last answer (``<|im_end|>`` in ChatML).

        The template renders the conversation prefix by prefix: an assistant turn's labels are exactly
        the text it adds after its header (what ``add_generation_prompt`` renders), trailing whitespace
        excluded; everything else is context. This holds for any template that renders a conversation
        as the concatenation of its turns.
        """
        messages = [{"role": t.role, "content": t.content} for t in turns]
        segments: list[tuple[str, bool]] = []
        end_of_turn = ""
        before = ""
        for k, turn in enumerate(turns):
            after = self._render(messages[: k + 1], False)
            if turn.role == "assistant":
                header = self._render(messages[:k], True)
                if not (header.startswith(before) and after.startswith(header) and len(header) > len(before)):
                    raise ValueError("the chat template must render a conversation turn by turn and write the assistant header for add_generation_prompt; labels cannot be placed")
                body = after[len(header) :]
                answer = body.rstrip()
                content = turn.content.strip()
                at = answer.find(content) if content else -1
                end_of_turn = answer[at + len(content) :] if at >= 0 else ""
                segments += [(header[len(before) :], False), (answer, True), (body[len(answer) :], False)]
            else:
                if not after.startswith(before):
                    raise ValueError("the chat template must render a conversation turn by turn; labels cannot be placed")
                segments.append((after[len(before) :], False))
            before = after
        if add_generation_prompt:
            segments.append((self._render(messages, True)[len(before) :], False))
        return [(t, lab) for t, lab in segments if t], end_of_turn

    def _tokenize(self, segments: list[tuple[str, bool]], image_runs: list[int]) -> tuple[list[int], list[int]]:
        """Token ids and labels; every ``<image>`` becomes a run of ``image_runs[k]`` image-token ids (inside
        the image wrapper, when there is one)."""
        pieces, owners = [], []
        for k, (text, _) in enumerate(segments):
            for j, piece in enumerate(text.split(IMAGE_TOKEN)):
                if j:
                    pieces.append(None)
                    owners.append(k)
                if piece:
                    pieces.append(piece)
                    owners.append(k)
        texts = [p for p in pieces if p is not None]
        encoded = iter(self.tokenizer(texts, add_special_tokens=False)["input_ids"]) if texts else iter(())
        ids: list[int] = []
        labels: list[int] = []
        runs = iter(image_runs)
        start, end = (self._wrapper_ids[:1], self._wrapper_ids[1:]) if self._wrapper_ids else ([], [])
        for piece, owner in zip(pieces, owners):
            chunk = start + [self.image_token_id] * next(runs) + end if piece is None else next(encoded)
            ids += chunk
            labels += chunk if segments[owner][1] else [IGNORE_INDEX] * len(chunk)
        return ids, labels

    def encode_conversation(
        self,
        turns: Sequence[Turn],
        images: Sequence = (),
        *,
        box_scale: int | None = DEFAULT_BOX_SCALE,
        add_generation_prompt: bool = False,
        max_length: int | None = None,
    ) -> dict:
        """Tokenise one conversation with its images.

        Args:
            turns: user / assistant / system turns with ``<image>`` placeholders.
            images: one image per placeholder, in order.
            box_scale: region markup in ``turns`` is the text form on ``0..box_scale`` relative to the
                original images and is rewritten into the model's codec; ``None`` leaves text as is.
            add_generation_prompt: end with the assistant prefix (for ``generate``).
            max_length: token budget (default ``self.max_length``); prose of the last answer is cut
                to fit, never an image run or a region; otherwise :class:`SampleTooLongError`.

        Returns:
            ``{"input_ids", "labels"}`` (1-D LongTensors), ``pixel_values (n_images, 3, S, S)``,
            ``image_sizes`` (original ``(w, h)``) and ``image_transforms``.
        """
        placeholders = sum(t.content.count(IMAGE_TOKEN) for t in turns)
        if placeholders != len(images):
            raise ValueError(f"{placeholders} {IMAGE_TOKEN} placeholder(s) but {len(images)} image(s)")
        prepared, runs = self.load_images(images)
        if box_scale is not None and any(BOX_START in t.content for t in turns):
            source = TextBoxCodec(scale=box_scale)
            turns = [Turn(t.role, source.transcode(t.content, prepared.sizes or [(1, 1)], self.codec)) for t in turns]
        segments, end_of_turn = self._segments(turns, add_generation_prompt)
        ids, labels = self._tokenize(segments, runs)
        limit = self.max_length if max_length is None else max_length
        if len(ids) > limit:
            end_ids = self.tokenizer(end_of_turn, add_special_tokens=False)["input_ids"] if end_of_turn else []
            ids, labels = self._truncate(ids, labels, limit, end_ids)
        return {
            "input_ids": torch.tensor(ids, dtype=torch.long),
            "labels": torch.tensor(labels, dtype=torch.long),
            "pixel_values": prepared.pixel_values,
            "image_sizes": prepared.sizes,
            "image_transforms": prepared.transforms,
        }

    def encode_record(self, record: Record, max_length: int | None = None) -> dict:
        """:meth:`encode_conversation` for a :class:`~medrega.data.Record`; errors name the record's location."""
        try:
            return self.encode_conversation(record.conversation, record.images, box_scale=record.box_scale, max_length=max_length)
        except SampleTooLongError as err:
            raise SampleTooLongError(f"{record.location or record.id}: {err}") from None

    def _truncate(self, ids: list[int], labels: list[int], limit: int, end_of_turn: list[int]) -> tuple[list[int], list[int]]:
        """Cut the tail of the last answer's prose so that ``len(ids) <= limit``; the answer then
        ends with ``end_of_turn`` (the template's end-of-turn token ids)."""
        tokens, targets = np.asarray(ids), np.asarray(labels)
        starts, ends = np.isin(tokens, [s for s, _ in self._protect]), np.isin(tokens, [e for _, e in self._protect])
        steps = np.cumsum(starts.astype(np.int64) - ends)
        depth = steps - np.minimum(np.minimum.accumulate(steps), 0)  # region nesting, never below 0
        protected = (tokens == self.image_token_id) | np.isin(tokens, self._wrapper_ids) | ends | (depth > 0)
        labelled = np.flatnonzero(targets != IGNORE_INDEX)
        if not labelled.size:
            raise SampleTooLongError(f"{len(ids)} tokens exceed max_length={limit} and there is no answer prose to cut")
        context = np.flatnonzero(targets[: labelled[-1]] == IGNORE_INDEX)
        answer_start = int(context[-1]) + 1 if context.size else 0
        cut = limit - len(end_of_turn)
        if cut > 0 and protected[cut - 1] and protected[cut]:  # never inside an image run or a region
            boundaries = np.flatnonzero(~(protected[: cut - 1] & protected[1:cut]))  # j: tokens j, j + 1 not both protected
            cut = int(boundaries[-1]) + 1 if boundaries.size else 0
        if cut <= answer_start or self.image_token_id in ids[cut:]:
            raise SampleTooLongError(f"{len(ids)} tokens exceed max_length={limit} and only images or regions could be cut")
        logger.debug("truncated a sample from %d to %d tokens", len(ids), cut + len(end_of_turn))
        return ids[:cut] + end_of_turn, labels[:cut] + end_of_turn

    # -- transformers-style call ----------------------------------------------------------------
    def __call__(self, images=None, text=None, videos=None, audio=None, **kwargs: Unpack[MedRegAProcessorKwargs]) -> BatchFeature:
        """Tokenise prompts that contain ``<image>`` placeholders and prepare their images.

        Args:
            images: per sample a list of images (path, PIL, numpy, DICOM); a sample may have none.
                For one sample, a flat list or a single image is accepted.
            text: a prompt or a list of prompts (e.g. from :meth:`render` or ``apply_chat_template``).
            return_tensors: ``"pt"``, ``"np"`` or ``None`` (Python lists, numpy ``pixel_values``).
            padding_side: ``"left"`` (default, for generation) or ``"right"``.
            padding, add_special_tokens: accepted as transformers' pipelines pass them, for what the
                processor does: ``padding=True`` / ``"longest"``, ``add_special_tokens=False``.
                Generation options (``do_sample``, ``max_new_tokens``, ...), which transformers' pipelines
                forward to the processor, are not the processor's and are left to ``generate``. Other keyword
                arguments (top level or inside ``text_kwargs`` etc.) raise ``TypeError``.

        Returns:
            A ``BatchFeature`` with ``input_ids``, ``attention_mask`` (padded to the longest prompt)
            and, when there are images, ``pixel_values`` (all images of the batch in order);
            ``.image_sizes`` (original sizes per sample) and ``.image_transforms`` are attributes,
            not model inputs.
        """
        if text is None:
            raise ValueError("text is required")
        if videos is not None or audio is not None:
            raise ValueError("MedRegA takes images and text only")
        options = _call_options(kwargs)
        return_tensors = options.get("return_tensors")
        side = options.get("padding_side") or "left"
        if side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', got {side!r}")
        texts = [text] if isinstance(text, str) else list(text)
        per_sample = self._images_per_sample(images, len(texts))
        for i, (t, ims) in enumerate(zip(texts, per_sample)):
            if t.count(IMAGE_TOKEN) != len(ims):
                raise ValueError(f"sample {i}: {t.count(IMAGE_TOKEN)} {IMAGE_TOKEN} placeholder(s) but {len(ims)} image(s)")
        loaded = [self.load_images(ims) for ims in per_sample]
        encoded = [self._tokenize([(t, False)], runs)[0] for t, (_, runs) in zip(texts, loaded)]
        width = max(len(ids) for ids in encoded)
        pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        input_ids, attention = [], []
        for ids in encoded:
            padding = width - len(ids)
            input_ids.append([pad_id] * padding + ids if side == "left" else ids + [pad_id] * padding)
            attention.append([0] * padding + [1] * len(ids) if side == "left" else [1] * len(ids) + [0] * padding)
        data = {"input_ids": input_ids, "attention_mask": attention}
        pixels = [prepared.pixel_values for prepared, _ in loaded if prepared.pixel_values.numel()]
        if pixels:
            pixel_values = torch.cat(pixels)
            data["pixel_values"] = pixel_values if return_tensors == "pt" else pixel_values.numpy()
        batch = BatchFeature(data, tensor_type=return_tensors)
        batch.image_sizes = [prepared.sizes for prepared, _ in loaded]
        batch.image_transforms = [prepared.transforms for prepared, _ in loaded]
        return batch

    @staticmethod
    def _images_per_sample(images, n: int) -> list[list]:
        if images is None:
            return [[] for _ in range(n)]
        if not isinstance(images, (list, tuple)):
            images = [images]
        if n == 1 and not (images and isinstance(images[0], (list, tuple))):
            return [list(images)]
        if len(images) != n:
            raise ValueError(f"{len(images)} image lists for {n} prompts; pass one list per prompt")
        return [list(ims) if isinstance(ims, (list, tuple)) else [ims] for ims in images]

    # -- decoding -------------------------------------------------------------------------------
    def post_process(self, generated_ids, image_sizes) -> list[Decoded]:
        """Decode newly generated ids (prompt removed) into text and groundings.

        Args:
            generated_ids: ``(B, T)`` tensor or lists of ids.
            image_sizes: per sample the original ``(width, height)`` of its image, or a list of sizes
                for a multi-image sample.

        Returns:
            One :class:`Decoded` per sample; boxes are in original-image pixels. Malformed boxes are
            skipped and listed in ``groundings.problems``.
        """
        rows = generated_ids.tolist() if isinstance(generated_ids, torch.Tensor) else [list(r) for r in generated_ids]
        raw = self.tokenizer.batch_decode(rows, skip_special_tokens=True, clean_up_tokenization_spaces=False)
        out = []
        for text, sizes in zip(raw, image_sizes, strict=True):
            text = text.strip()
            groundings = self.codec.parse(text, sizes) if sizes else ParseResult(problems=[] if BOX_START not in text else ["boxes but no image"])
            out.append(Decoded(self.codec.strip(text).strip(), text, groundings))
        return out
