import copy

import numpy as np
import pytest
import torch
from PIL import Image

from medrega.data import Record, Turn
from medrega.grounding import Grounding, LocTokenCodec, TextBoxCodec
from medrega.image_transforms import prepare_image
from medrega.processing import CHAT_TEMPLATE, IM_END, MedRegAProcessor, SampleTooLongError
from medrega.tokenization import train_bpe_tokenizer


@pytest.fixture(scope="module")
def processor():
    lines = ["Please locate the left lung in this scan.", "The heart is normal. 心脏大小正常。左肺未见异常。"] * 30
    tok = train_bpe_tokenizer(lines, vocab_size=500)
    MedRegAProcessor.prepare_tokenizer(tok, LocTokenCodec())
    return MedRegAProcessor(tokenizer=tok, image_size=32, num_image_tokens=4, max_length=256)


@pytest.fixture
def scan(tmp_path):
    path = tmp_path / "scan.png"
    Image.new("L", (200, 100), 80).save(path)
    return str(path)


def _record(scan, answer, question="<image>\nPlease locate <ref>left lung</ref>."):
    return Record("r", [scan], [Turn("user", question), Turn("assistant", answer)], image_sizes=[(200, 100)], box_scale=1000)


def test_labels_cover_only_the_answer(processor, scan):
    out = processor.encode_record(_record(scan, "The heart is normal."))
    ids, labels = out["input_ids"], out["labels"]
    assert ids.shape == labels.shape
    assert (ids == processor.image_token_id).sum() == 4
    labelled = ids[labels != -100]
    assert processor.tokenizer.decode(labelled) == "The heart is normal." + IM_END
    assert out["pixel_values"].shape == (1, 3, 32, 32)
    assert out["image_sizes"] == [(200, 100)]


def test_region_markup_becomes_loc_tokens_relative_to_original(processor, scan):
    answer = TextBoxCodec(1000).format([Grounding("left lung", [(20, 10, 120, 90)])], (200, 100))
    out = processor.encode_record(_record(scan, answer))
    text = processor.tokenizer.decode(out["input_ids"][out["labels"] != -100], skip_special_tokens=True)
    assert "<loc_" in text and "[[" not in text
    (g,) = processor.codec.parse(text, (200, 100))
    assert g.phrase == "left lung"
    assert g.boxes[0] == pytest.approx((20, 10, 120, 90), abs=0.2)


def test_truncation_cuts_prose_never_a_region(processor, scan):
    long_answer = TextBoxCodec(1000).format([Grounding("left lung", [(20, 10, 120, 90)])], (200, 100)) + ": " + "the heart is normal. " * 40
    full = processor.encode_record(_record(scan, long_answer), max_length=10_000)
    limit = len(full["input_ids"]) - 30
    cut = processor.encode_record(_record(scan, long_answer), max_length=limit)
    assert len(cut["input_ids"]) <= limit
    assert cut["input_ids"][-1] == processor.im_end_id
    text = processor.tokenizer.decode(cut["input_ids"][cut["labels"] != -100], skip_special_tokens=True)
    assert len(processor.codec.parse(text, (200, 100))) == 1  # the region survived whole
    region_only = TextBoxCodec(1000).format([Grounding("left lung", [(20, 10, 120, 90)])], (200, 100))
    tight = processor.encode_record(_record(scan, region_only), max_length=10_000)
    with pytest.raises(SampleTooLongError, match="only images or regions"):
        processor.encode_record(_record(scan, region_only), max_length=len(tight["input_ids"]) - 3)


def test_call_like_transformers_with_mixed_image_counts(processor, scan):
    prompts = [
        processor.render([Turn("user", "<image>\nPlease locate the heart.")], add_generation_prompt=True),
        processor.render([Turn("user", "Is the heart normal?")], add_generation_prompt=True),
        processor.render([Turn("user", "<image><image>\nCompare.")], add_generation_prompt=True),
    ]
    batch = processor(text=prompts, images=[[scan], [], [scan, Image.new("RGB", (50, 60))]], return_tensors="pt")
    assert batch["pixel_values"].shape == (3, 3, 32, 32)
    assert batch["input_ids"].shape == batch["attention_mask"].shape
    assert ((batch["input_ids"] == processor.image_token_id).sum(1) == torch.tensor([4, 0, 8])).all()
    assert batch["attention_mask"][:, -1].all()  # left padding for generation
    assert batch.image_sizes == [[(200, 100)], [], [(200, 100), (50, 60)]]
    with pytest.raises(ValueError, match="sample 0: 1 <image> placeholder"):
        processor(text=[prompts[0]], images=[[]])


def test_post_process_gives_boxes_in_original_pixels(processor):
    answer = LocTokenCodec().format([Grounding("左肺", [(20, 10, 120, 90)])], (200, 100)) + "：未见异常"
    ids = processor.tokenizer(answer + IM_END, add_special_tokens=False)["input_ids"]
    (decoded,) = processor.post_process(torch.tensor([ids]), [(200, 100)])
    assert decoded.text == "左肺：未见异常"
    assert decoded.groundings[0].phrase == "左肺"
    assert decoded.groundings[0].boxes[0] == pytest.approx((20, 10, 120, 90), abs=0.11)
    cut = ids.index(processor.tokenizer.convert_tokens_to_ids("</box>")) - 1
    (broken,) = processor.post_process([ids[:cut]], [(200, 100)])
    assert broken.groundings == [] and broken.groundings.problems


def test_letterbox_transform_is_exactly_invertible():
    image = Image.new("RGB", (300, 120))
    canvas, transform = prepare_image(image, 64, mode="letterbox")
    assert canvas.size == (64, 64)
    box = (30.0, 12.0, 270.0, 100.0)
    on_input = transform.to_input(box)
    assert on_input[1] >= transform.offset[1]
    assert transform.to_original(on_input) == pytest.approx(box)


def test_save_and_load(processor, tmp_path):
    processor.save_pretrained(tmp_path / "proc")
    loaded = MedRegAProcessor.from_pretrained(tmp_path / "proc")
    assert loaded.image_size == 32 and loaded.num_image_tokens == 4
    assert loaded.chat_template == processor.chat_template
    assert loaded.tokenizer.convert_tokens_to_ids("<loc_7>") == processor.tokenizer.convert_tokens_to_ids("<loc_7>")
    text = processor.render([Turn("user", "hi")], add_generation_prompt=True)
    assert loaded(text=text)["input_ids"] == processor(text=text)["input_ids"]  # lists without return_tensors, as in transformers


def test_dynamic_tiles_expand_placeholders_and_keep_original_boxes(processor, scan):
    tiled = MedRegAProcessor(tokenizer=processor.tokenizer, image_size=32, num_image_tokens=4, max_tiles=4)
    answer = TextBoxCodec(1000).format([Grounding("left lung", [(20, 10, 120, 90)])], (200, 100))
    out = tiled.encode_record(_record(scan, answer))
    assert out["pixel_values"].shape == (3, 3, 32, 32)  # a 2x1 grid for a 2:1 image, plus the thumbnail
    assert (out["input_ids"] == tiled.image_token_id).sum() == 3 * 4
    text = tiled.tokenizer.decode(out["input_ids"][out["labels"] != -100], skip_special_tokens=True)
    assert tiled.codec.parse(text, (200, 100))[0].boxes[0] == pytest.approx((20, 10, 120, 90), abs=0.2)
    batch = tiled(text=["<image>\nhi", "no image"], images=[[scan], []], return_tensors="pt")
    assert batch["pixel_values"].shape[0] == 3
    assert ((batch["input_ids"] == tiled.image_token_id).sum(1) == torch.tensor([12, 0])).all()


LLAMA3_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] + '<|eot_id|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
PLAIN_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] + ': ' + message['content'] + '\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'assistant: ' }}{% endif %}"
)


def _labelled(processor, out) -> str:
    return processor.tokenizer.decode(out["input_ids"][out["labels"] != -100])


@pytest.fixture(scope="module")
def llama_processor(processor):
    tok = copy.deepcopy(processor.tokenizer)
    tok.add_special_tokens({"additional_special_tokens": ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]}, replace_extra_special_tokens=False)
    return MedRegAProcessor(tokenizer=tok, image_size=32, num_image_tokens=4, chat_template=LLAMA3_TEMPLATE)


@pytest.mark.parametrize("answer", ["a", "s", "t", "assistant", "im", "<"])
def test_labels_cover_an_answer_that_also_occurs_in_the_role_header(processor, scan, answer):
    out = processor.encode_record(_record(scan, answer))
    assert _labelled(processor, out) == answer + IM_END


def test_labels_follow_another_chat_template(llama_processor, processor, scan):
    for answer in ("assistant", "The heart is normal."):
        out = llama_processor.encode_record(_record(scan, answer))
        assert _labelled(llama_processor, out) == answer + "<|eot_id|>"
    plain = MedRegAProcessor(tokenizer=processor.tokenizer, image_size=32, num_image_tokens=4, chat_template=PLAIN_TEMPLATE)
    for answer in ("s", "The heart is normal."):
        out = plain.encode_record(_record(scan, answer))
        assert _labelled(plain, out) == answer
        assert (out["input_ids"] == plain.image_token_id).sum() == 4


def test_every_assistant_turn_is_labelled_in_a_multi_turn_conversation(llama_processor, processor, scan):
    turns = [Turn("system", "You are a radiologist."), Turn("user", "<image>\nWhat is this?"), Turn("assistant", "a"), Turn("user", "And?"), Turn("assistant", "The heart.")]
    for proc, end in ((processor, IM_END), (llama_processor, "<|eot_id|>")):
        out = proc.encode_conversation(turns, [scan])
        labels = out["labels"]
        labelled = out["input_ids"][labels != -100]
        assert proc.tokenizer.decode(labelled) == f"a{end}The heart.{end}"
        runs = ((labels[1:] != -100) & (labels[:-1] == -100)).sum()
        assert runs == 2  # two separate answers, the context between them unlabelled


def test_truncation_ends_the_answer_with_the_templates_end_of_turn(llama_processor, scan):
    long_answer = "the heart is normal. " * 40
    full = llama_processor.encode_record(_record(scan, long_answer), max_length=10_000)
    cut = llama_processor.encode_record(_record(scan, long_answer), max_length=len(full["input_ids"]) - 30)
    assert len(cut["input_ids"]) == len(full["input_ids"]) - 30
    assert llama_processor.tokenizer.convert_ids_to_tokens(int(cut["input_ids"][-1])) == "<|eot_id|>"
    assert _labelled(llama_processor, cut).endswith("<|eot_id|>")


def test_a_template_that_cannot_place_labels_is_refused(processor, scan):
    no_prompt = CHAT_TEMPLATE.split("{% if add_generation_prompt %}")[0]  # ignores add_generation_prompt
    broken = MedRegAProcessor(tokenizer=processor.tokenizer, image_size=32, num_image_tokens=4, chat_template=no_prompt)
    with pytest.raises(ValueError, match="assistant header"):
        broken.encode_record(_record(scan, "The heart is normal."))


def test_tiles_without_thumbnail_keep_boxes_and_transforms_in_original_pixels(processor, scan):
    tiled = MedRegAProcessor(tokenizer=processor.tokenizer, image_size=32, num_image_tokens=4, max_tiles=4, use_thumbnail=False)
    answer = TextBoxCodec(1000).format([Grounding("left lung", [(20, 10, 120, 90)])], (200, 100))
    out = tiled.encode_record(_record(scan, answer))
    assert out["pixel_values"].shape == (2, 3, 32, 32)  # a 2x1 grid, no thumbnail
    (transform,) = out["image_transforms"]
    assert transform.original_size == (200, 100)
    assert transform.to_original((0, 0, 32, 32)) == pytest.approx((0, 0, 200, 100))
    text = tiled.tokenizer.decode(out["input_ids"][out["labels"] != -100], skip_special_tokens=True)
    assert tiled.codec.parse(text, (200, 100))[0].boxes[0] == pytest.approx((20, 10, 120, 90), abs=0.2)
    ids = tiled.tokenizer(text, add_special_tokens=False)["input_ids"]
    (decoded,) = tiled.post_process([ids], out["image_sizes"])
    assert decoded.groundings[0].boxes[0] == pytest.approx((20, 10, 120, 90), abs=0.2)
    batch = tiled(text="<image>\nhi", images=[scan])
    assert batch.image_transforms == [[transform]]


def test_call_rejects_keyword_arguments_it_would_ignore(processor):
    text = processor.render([Turn("user", "hi")], add_generation_prompt=True)
    for options in ({"max_length": 4}, {"truncation": True}, {"text_kwargs": {"max_length": 4}}, {"images_kwargs": {"resize_mode": "letterbox"}}, {"foo": 1}):
        with pytest.raises(TypeError, match="unsupported keyword argument"):
            processor(text=text, **options)
    with pytest.raises(ValueError, match="padding"):
        processor(text=[text, "hello"], padding="max_length")
    right = processor(text=[text, "hi"], padding=True, text_kwargs={"padding_side": "right"}, return_tensors="np")
    assert isinstance(right["input_ids"], np.ndarray) and right["attention_mask"][:, 0].all()
    assert processor(text=text, add_special_tokens=False)["input_ids"] == processor(text=text)["input_ids"]
    assert processor(text=text, do_sample=False, min_new_tokens=6)["input_ids"] == processor(text=text)["input_ids"]  # a pipeline's generation options
