"""``load_records``: read medrega JSONL and import LLaVA, InternVL/MedRegA, Mantis/Med-MIM and Med-MAT files."""

from __future__ import annotations

import codecs
import json
import logging
import math
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from medrega.data.records import Record, RecordError, Turn, detect_lang
from medrega.grounding import DEFAULT_BOX_SCALE, IMAGE_TOKEN, MEDREGA_BOX_SCALE, Grounding

__all__ = ["load_records", "record_from_raw", "RecordList", "FORMATS", "detect_format", "iter_raw", "parse_json_line", "JsonLineError"]

logger = logging.getLogger(__name__)

FORMATS = ("medrega", "llava", "internvl", "mantis", "medmat")
MED_MIM_ABILITIES = ("Temporal", "Reasoning", "Comparison", "Coreference")
_ROLE_FROM = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}


class _BadField(ValueError):
    """A field of a raw record with the wrong type or value; becomes a :class:`RecordError`."""

    def __init__(self, field: str, reason: str):
        super().__init__(reason)
        self.field = field


def _positive_int(value, field: str) -> int:
    """``value`` as a positive integer (``1024`` or ``1024.0``), else :class:`_BadField` naming ``field``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0 or value != int(value):
        raise _BadField(field, f"expected a positive integer, got {value!r}")
    return int(value)


def _sizes(value, field: str) -> list[tuple[int, int]]:
    if not isinstance(value, list):
        raise _BadField(field, f"expected a list of [width, height], got {type(value).__name__}")
    out = []
    for i, size in enumerate(value):
        if not isinstance(size, (list, tuple)) or len(size) != 2:
            raise _BadField(f"{field}[{i}]", f"expected [width, height], got {size!r}")
        out.append((_positive_int(size[0], f"{field}[{i}][0]"), _positive_int(size[1], f"{field}[{i}][1]")))
    return out


def _typed(value, kind: type, field: str, expected: str):
    """``value`` when it is a ``kind`` (never a bool for numbers), else :class:`_BadField` naming ``field``."""
    if not isinstance(value, kind) or isinstance(value, bool):
        raise _BadField(field, f"expected {expected}, got {type(value).__name__} {str(value)[:40]!r}")
    return value


def _strings(value, field: str) -> list[str]:
    """A list of strings (a single string is a list of one), else :class:`_BadField`."""
    items = [value] if isinstance(value, str) else _typed(value, list, field, "a list of image paths")
    return [_typed(v, str, f"{field}[{i}]", "an image path (a string)") for i, v in enumerate(items)]


def _optional_str(obj: dict, key: str) -> str | None:
    return None if obj.get(key) is None else _typed(obj[key], str, key, "a string")


def _grounding(value, field: str) -> Grounding:
    """A grounding dict whose boxes are four finite numbers each, else :class:`_BadField`."""
    try:
        grounding = Grounding.from_dict(value)
    except (TypeError, ValueError, KeyError, AttributeError) as err:
        raise _BadField(field, f"expected {{'phrase': ..., 'boxes': [[x1, y1, x2, y2], ...]}}: {err}") from None
    for j, box in enumerate(grounding.boxes):
        if len(box) != 4 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in box):
            raise _BadField(f"{field}.boxes[{j}]", f"expected four finite numbers [x1, y1, x2, y2], got {list(box)!r}")
    return grounding


def skip_reason(err: RecordError) -> str:
    """What a skipped record is counted under: its field and the reason without the detail after a
    colon (``"images[0]: image not found"`` for ``image not found: /data/a.png``)."""
    return f"{err.field}: {err.reason.partition(':')[0]}"


class RecordList(list):
    """A ``list[Record]`` that also keeps what was skipped: ``skipped`` holds the :class:`RecordError` s."""

    def __init__(self, records=(), skipped=()):
        super().__init__(records)
        self.skipped: list[RecordError] = list(skipped)

    def report(self) -> str:
        """One line per skip reason with its count, e.g. ``"2 skipped: 2 x images[0]: image not found"``."""
        if not self.skipped:
            return f"{len(self)} record(s) loaded, none skipped"
        reasons = Counter(skip_reason(e) for e in self.skipped)
        lines = [f"{len(self)} record(s) loaded, {len(self.skipped)} skipped:"]
        lines += [f"  {n} x {reason}" for reason, n in reasons.most_common()]
        return "\n".join(lines)


class JsonLineError(ValueError):
    """A line that is not one valid UTF-8 JSON value."""


def parse_json_line(data: bytes):
    """Parse one JSONL line (bytes, a UTF-8 BOM allowed); :class:`JsonLineError` for anything that is
    not valid UTF-8 JSON (bad bytes, syntax, integers over Python's digit limit, nesting too deep).

    JSONL lines end at ``\n`` only: U+2028 and friends inside strings are data, as JSON says.
    """
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8) :]
    try:
        return json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as err:
        raise JsonLineError(f"not UTF-8 (byte {err.start}: {data[err.start : err.start + 1]!r})") from None
    except RecursionError:
        raise JsonLineError("nested too deeply") from None
    except ValueError as err:  # JSONDecodeError, and integers beyond the int-string limit
        raise JsonLineError(str(err)) from None


def iter_raw(path: Path) -> Iterator[tuple[int, dict | Exception]]:
    """Yield ``(line_or_index, object)`` from a JSONL file or a JSON array (1-based numbers);
    a line that is not valid JSON yields a :class:`JsonLineError` instead of stopping the file."""
    data = path.read_bytes()
    if data.lstrip(codecs.BOM_UTF8 + b" \t\r\n").startswith(b"["):
        try:
            items = parse_json_line(data)
        except JsonLineError as err:
            yield 1, err
            return
        yield from enumerate(items, 1)
        return
    for number, line in enumerate(data.split(b"\n"), 1):
        if not line.strip():
            continue
        try:
            yield number, parse_json_line(line)
        except JsonLineError as err:
            yield number, err


def detect_format(obj: dict) -> str:
    """Guess the format of one raw record by its keys."""
    if "Question-choice" in obj or "Answer-choice" in obj:
        return "medmat"
    if "conversations" in obj:
        return "internvl" if "width" in obj or "height" in obj else "llava"
    if "conversation" in obj:
        return "medrega" if "lang" in obj or "box_scale" in obj or "task" in obj else "mantis"
    raise ValueError(f"unknown record format (keys: {sorted(obj)})")


def _resolve(base: Path, image_root: Path | None, rel: str) -> str:
    """Absolute image path. Under ``image_root``, a path whose leading folders do not exist there
    is tried with them removed (``demo_data/images/a.jpg`` -> ``images/a.jpg`` -> ``a.jpg``), since
    released files often name the folder they were packed from."""
    path = Path(rel)
    if path.is_absolute():
        return str(path)
    root = image_root or base
    parts = [p for p in path.parts if p not in (".", "")]
    if image_root is not None:
        for start in range(len(parts)):
            candidate = root.joinpath(*parts[start:])
            if candidate.exists():
                return str(candidate)
    return str(root.joinpath(*parts))


def _turns(items: list, role_key: str, content_key: str, field: str) -> list[Turn]:
    _typed(items, list, field, f"a list of {{{role_key!r}: ..., {content_key!r}: ...}} turns")
    turns = []
    for i, item in enumerate(items):
        _typed(item, dict, f"{field}[{i}]", f"a turn {{{role_key!r}: ..., {content_key!r}: ...}}")
        if content_key not in item:
            raise KeyError(f"{field}[{i}].{content_key}")
        role = _typed(item.get(role_key), str, f"{field}[{i}].{role_key}", "a role such as 'user' or 'assistant'")
        content = _typed(item[content_key], str, f"{field}[{i}].{content_key}", "the turn's text (a string)")
        turns.append(Turn(_ROLE_FROM.get(role, role), content))
    return turns


def _check_confined(images: list[str], root: Path) -> None:
    """Refuse image paths that resolve outside ``root`` (``../``, absolute paths, symlinks out)."""
    root = root.resolve()
    for i, image in enumerate(images):
        if not Path(image).resolve().is_relative_to(root):
            raise _BadField(f"images[{i}]", f"{image} lies outside the image root {root} (confine_images is on)")


def _convert(obj: dict, fmt: str, base: Path, image_root: Path | None, box_scale: int | None, path: Path) -> Record:
    if fmt == "medmat":
        question = obj["Question-choice"]
        for key in ("Question-choice", "Answer-choice"):
            if not isinstance(obj[key], str) or not obj[key].strip():
                raise _BadField(key, f"expected a non-empty string (the answer a letter such as 'B'), got {obj[key]!r}")
        content = question if IMAGE_TOKEN in question else f"{IMAGE_TOKEN}\n{question}"
        return Record(
            id=str(obj.get("id", "")),
            images=[_resolve(base, image_root, _typed(obj["image"], str, "image", "an image path (a string)"))],
            conversation=[Turn("user", content), Turn("assistant", str(obj["Answer-choice"]).strip())],
            lang=detect_lang(question),
            task="classification",
            meta={k: obj[k] for k in ("caption", "Question", "Answer", "data-no") if k in obj},
        )
    if fmt in ("llava", "internvl"):
        images = _strings(obj.get("image", []), "image")
        sizes = None
        if "width" in obj and "height" in obj:
            sizes = [(_positive_int(obj["width"], "width"), _positive_int(obj["height"], "height"))] * max(1, len(images))
        conversation = _turns(obj["conversations"], "from", "value", "conversations")
        return Record(
            id=str(obj.get("id", "")),
            images=[_resolve(base, image_root, p) for p in images],
            conversation=conversation,
            image_sizes=sizes if images else None,
            box_scale=box_scale or MEDREGA_BOX_SCALE,
            lang=detect_lang(" ".join(t.content for t in conversation)),
            task=_optional_str(obj, "task"),
        )
    # medrega and mantis share the images + conversation(role/content) layout
    conversation = _turns(obj["conversation"], "role", "content", "conversation")
    sizes = obj.get("image_sizes")
    source = _optional_str(obj, "source")
    task = _optional_str(obj, "task")
    meta = dict(_typed(obj.get("meta", {}), dict, "meta", "an object"))
    if fmt == "mantis":
        ability = next((a for a in MED_MIM_ABILITIES if a.lower() in path.name.lower()), None)
        split = "held_out" if "held_out" in path.name.lower() else "held_in" if "held_in" in path.name.lower() else None
        meta.update({k: v for k, v in (("ability", ability), ("split", split)) if v})
        task = task or "multi_image"
    return Record(
        id=str(obj.get("id", "")),
        images=[_resolve(base, image_root, p) for p in _strings(obj.get("images", []), "images")],
        conversation=conversation,
        groundings=[_grounding(g, f"groundings[{i}]") for i, g in enumerate(_typed(obj.get("groundings", []), list, "groundings", "a list of groundings"))],
        image_sizes=_sizes(sizes, "image_sizes") if sizes else None,
        box_scale=_positive_int(obj.get("box_scale", box_scale or DEFAULT_BOX_SCALE), "box_scale"),
        lang=_optional_str(obj, "lang") or detect_lang(" ".join(t.content for t in conversation)),
        task=task,
        modality=_optional_str(obj, "modality"),
        area=_optional_str(obj, "area"),
        mat_task=_optional_str(obj, "mat_task"),
        source=source,
        meta=meta,
    )


def record_from_raw(
    obj,
    path: Path,
    line: int,
    *,
    format: str = "auto",
    file_format: str | None = None,
    image_root: Path | None = None,
    box_scale: int | None = None,
    check_images: bool = True,
    confine_images: bool = False,
) -> Record:
    """Convert and validate one raw JSON object read from ``path`` at ``line``.

    Args:
        obj: the parsed JSON value.
        path: the file it came from (image paths are relative to its directory or ``image_root``).
        line: 1-based line (or array index) for error messages.
        format: ``"auto"`` or a format of :data:`FORMATS`.
        file_format: the file's format, used for a record too broken to be recognised.
        image_root, box_scale, check_images, confine_images: as in :func:`load_records`.

    Raises:
        RecordError: naming ``path``, ``line`` and the field.
    """
    where = str(path)
    if not isinstance(obj, dict):
        raise RecordError(where, line, "<json>", f"expected a JSON object, got {type(obj).__name__}")
    try:
        fmt = format
        if format == "auto":
            try:
                fmt = detect_format(obj)
            except ValueError:
                if file_format is None:
                    raise
                fmt = file_format
        base = Path(path).resolve().parent
        record = _convert(obj, fmt, base, image_root, box_scale, Path(path))
        if confine_images:
            _check_confined(record.images, image_root or base)
        record.location = f"{where}:{line}"
        return record.validate(where, line, check_images=check_images)
    except RecordError:
        raise
    except _BadField as err:
        raise RecordError(where, line, err.field, str(err)) from None
    except KeyError as err:
        raise RecordError(where, line, str(err.args[0]), "missing") from None
    except (TypeError, ValueError, AttributeError, ArithmeticError, RecursionError) as err:
        raise RecordError(where, line, "<record>", f"{type(err).__name__}: {err}") from None


def load_records(
    path: str | Path,
    format: str = "auto",
    *,
    image_root: str | Path | None = None,
    box_scale: int | None = None,
    check_images: bool = True,
    on_error: str = "raise",
    confine_images: bool = False,
) -> RecordList:
    """Read records from a JSONL file (or a JSON array) in any supported format.

    Args:
        path: the file.
        format: ``"auto"`` (by each record's keys) or one of ``medrega``, ``llava``, ``internvl``,
            ``mantis`` (Med-MIM), ``medmat``.
        image_root: directory image paths are relative to (default: the file's directory).
        box_scale: coordinate range of text boxes; default 999 for LLaVA/InternVL (MedRegA's data),
            1000 for medrega files.
        check_images: require every image file to exist.
        on_error: ``"raise"`` stops at the first bad record with a :class:`RecordError` naming the
            file, line and field; ``"skip"`` skips it, counts it in ``RecordList.skipped`` and logs
            a summary.
        confine_images: refuse records whose image paths resolve outside ``image_root`` (or the file's
            directory): ``../`` escapes, absolute paths, symlinks pointing out. Off by default here;
            ``medrega eval`` turns it on.

    Returns:
        A :class:`RecordList` (a list of :class:`Record` with ``.skipped`` and ``.report()``).
    """
    if format != "auto" and format not in FORMATS:
        raise ValueError(f"format must be 'auto' or one of {FORMATS}, got {format!r}")
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such record file: {path}")
    root = Path(image_root).resolve() if image_root is not None else None
    out = RecordList()
    file_format = None if format == "auto" else format
    for line, obj in iter_raw(path):
        try:
            if isinstance(obj, Exception):
                raise RecordError(str(path), line, "<json>", f"not valid JSON: {obj}")
            record = record_from_raw(obj, path, line, format=format, file_format=file_format, image_root=root, box_scale=box_scale, check_images=check_images, confine_images=confine_images)
            file_format = file_format or detect_format(obj)
            out.append(record)
        except RecordError as err:
            if on_error == "raise":
                raise
            out.skipped.append(err)
    if out.skipped:
        logger.warning("%s: %s", path, out.report())
    return out
