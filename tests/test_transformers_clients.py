"""MedRegA through the transformers clients a user already has: pipeline, AutoProcessor, chat
messages, generate (cache, assisted), Trainer.evaluate; LLaVA's own code is the reference where
both models can hold the same weights."""

import json

import pytest
import torch
from PIL import Image
from transformers import (
    AutoImageProcessor,
    AutoModelForImageTextToText,
    AutoProcessor,
    CLIPVisionConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    Trainer,
    TrainingArguments,
    pipeline,
)
from transformers.modeling_outputs import BaseModelOutputWithPooling

import medrega
from medrega import presets
from medrega.data.collate import pad_collate
from medrega.data.records import Turn
from medrega.models import LLAVA_KEY_MAPPING, MedRegAConfig, MedRegAForConditionalGeneration, convert_state_dict

SMALL = {"hidden_size": 64, "num_layers": 2, "vision_layers": 1, "vision_width": 64}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny():
    model, processor = presets.build("tiny", seed=0, **SMALL)
    return model.eval(), processor


@pytest.fixture(scope="module")
def saved(tiny, tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny")
    model, processor = tiny
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def scan():
    return Image.linear_gradient("L").resize((80, 60)).convert("RGB")


def _messages(scan, question="Where is the left lung?"):
    return [{"role": "user", "content": [{"type": "image", "image": scan}, {"type": "text", "text": question}]}]


def _greedy(model, inputs, n=6):
    return model.generate(**inputs, max_new_tokens=n, min_new_tokens=n, do_sample=False)


def test_auto_processor_and_a_real_image_processor_component(saved, tiny, scan):
    _, processor = tiny
    loaded = AutoProcessor.from_pretrained(saved)
    assert isinstance(loaded, medrega.MedRegAProcessor)
    assert isinstance(loaded.image_processor, medrega.MedRegAImageProcessor)
    assert json.loads((saved / "preprocessor_config.json").read_text())["image_processor_type"] == "MedRegAImageProcessor"
    images = AutoImageProcessor.from_pretrained(saved)
    assert isinstance(images, medrega.MedRegAImageProcessor) and images.image_size == processor.image_size
    torch.testing.assert_close(images(scan, return_tensors="pt")["pixel_values"], processor.image_processor(scan, return_tensors="pt")["pixel_values"])
    assert {"input_ids", "attention_mask", "pixel_values"} <= set(loaded.model_input_names)
    plain = loaded(text="<image>\nhi", images=[scan])  # no return_tensors: lists, as transformers' processors give
    assert isinstance(plain["input_ids"], list) and isinstance(plain["input_ids"][0], list)
    tensors = loaded(text="<image>\nhi", images=[scan], return_tensors="pt", text_kwargs={"padding_side": "right"})
    assert tensors["input_ids"].tolist() == plain["input_ids"]


def test_apply_chat_template_with_images_then_generate(tiny, scan):
    model, processor = tiny
    messages = _messages(scan)
    text = processor.apply_chat_template(messages, add_generation_prompt=True)
    assert text == processor.render([Turn("user", "<image>\nWhere is the left lung?")], add_generation_prompt=True)
    inputs = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt")
    direct = processor(text=text, images=[scan], return_tensors="pt")
    assert torch.equal(inputs["input_ids"], direct["input_ids"])
    torch.testing.assert_close(inputs["pixel_values"], direct["pixel_values"])
    assert torch.equal(_greedy(model, inputs), _greedy(model, direct))


def test_pipeline_from_a_saved_directory_plain_text_and_chat(saved, scan):
    pipe = pipeline("image-text-to-text", model=str(saved))
    assert isinstance(pipe.model, MedRegAForConditionalGeneration)
    model, processor = pipe.model, pipe.processor
    prompt = processor.apply_chat_template(_messages(scan, "Where is the heart?"), add_generation_prompt=True)
    inputs = processor(text=prompt, images=[scan], return_tensors="pt")
    expected = processor.batch_decode(_greedy(model, inputs)[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)[0]
    options = {"max_new_tokens": 6, "min_new_tokens": 6, "do_sample": False, "return_full_text": False}
    plain = pipe(images=scan, text=prompt, **options)
    assert plain[0]["generated_text"] == expected
    chat = pipe(text=_messages(scan, "Where is the heart?"), **options)
    assert chat[0]["generated_text"] == expected


def test_decoding_uses_the_cache_and_runs_the_vision_tower_once(tiny, scan):
    model, processor = tiny
    inputs = processor(text="<image>\nhi", images=[scan], return_tensors="pt")
    tower_calls, step_lengths = [], []
    hooks = [
        model.vision_tower.register_forward_hook(lambda *_: tower_calls.append(1)),
        model.language_model.get_decoder().register_forward_pre_hook(lambda _, args, kwargs: step_lengths.append(kwargs["inputs_embeds"].shape[1]), with_kwargs=True),
    ]
    try:
        out = _greedy(model, inputs, n=5)
    finally:
        for hook in hooks:
            hook.remove()
    prompt = inputs["input_ids"].shape[1]
    assert len(tower_calls) == 1
    assert step_lengths == [prompt, 1, 1, 1, 1]  # prefill once, then one new token per step
    no_cache = model.generate(**inputs, max_new_tokens=5, min_new_tokens=5, do_sample=False, use_cache=False)
    assert torch.equal(out, no_cache)


def test_assisted_generation_with_a_medrega_draft_keeps_greedy_output(tiny, scan):
    model, processor = tiny
    draft, _ = presets.build("tiny", seed=1, **{**SMALL, "num_layers": 1})
    inputs = processor(text=["<image>\nwhere is the heart"], images=[[scan]], return_tensors="pt")
    assisted = model.generate(**inputs, assistant_model=draft.eval(), max_new_tokens=8, min_new_tokens=8, do_sample=False)
    assert torch.equal(assisted, _greedy(model, inputs, n=8))


def test_return_dict_false_gives_the_tuple_of_the_output(tiny, scan):
    model, processor = tiny
    inputs = processor(text="<image>\nhi", images=[scan], return_tensors="pt")
    as_dict = model(**inputs)
    as_tuple = model(**inputs, return_dict=False)
    assert isinstance(as_tuple, tuple)
    torch.testing.assert_close(as_tuple[0], as_dict.logits)
    labels = inputs["input_ids"].clone()
    loss_first = model(**inputs, labels=labels, return_dict=False)
    torch.testing.assert_close(loss_first[0], model(**inputs, labels=labels).loss)


def test_default_config_and_a_compact_print(tiny, tmp_path):
    default = MedRegAConfig()
    assert default.image_token_id is None and default.num_image_tokens == 196  # ViT-B/16 at 224 px
    assert MedRegAConfig.from_dict(default.to_dict()).to_dict() == default.to_dict()
    model, _ = tiny
    printed = str(model.config)
    assert len(printed.splitlines()) < 100
    assert f"{len(model.config.region_token_ids)} ids from" in printed
    model.config.save_pretrained(tmp_path)
    assert MedRegAConfig.from_pretrained(tmp_path).region_token_ids == model.config.region_token_ids
    ids_only = MedRegAForConditionalGeneration(MedRegAConfig(vision_config=model.config.vision_config, text_config=model.config.text_config))
    with pytest.raises(ValueError, match="image_token_id is not set"):
        ids_only(input_ids=torch.tensor([[1, 2]]), pixel_values=torch.zeros(1, 3, 64, 64))


def test_trainer_evaluate_gives_compute_metrics_the_logits(tiny, scan, tmp_path):
    model, processor = tiny
    turns = [Turn("user", "<image>\nWhere is the heart?"), Turn("assistant", "The heart is in the middle.")]
    samples = [processor.encode_conversation(turns, [scan]) for _ in range(3)]
    seen = {}

    def compute_metrics(prediction):
        seen["shape"] = prediction.predictions.shape
        logits, labels = torch.from_numpy(prediction.predictions), torch.from_numpy(prediction.label_ids)
        keep = labels[:, 1:] != -100
        return {"token_accuracy": float((logits[:, :-1].argmax(-1)[keep] == labels[:, 1:][keep]).float().mean())}

    args = TrainingArguments(output_dir=str(tmp_path), per_device_eval_batch_size=2, report_to=[], use_cpu=True)
    collate = lambda batch: {k: v for k, v in pad_collate(batch, processor.tokenizer.pad_token_id).items() if not k.startswith("num_")}  # noqa: E731
    trainer = Trainer(model=model, args=args, eval_dataset=samples, data_collator=collate, compute_metrics=compute_metrics)
    metrics = trainer.evaluate()
    batch = collate(samples)
    with torch.no_grad():
        out = model(**batch)
    assert seen["shape"] == tuple(out.logits.shape)
    keep = batch["labels"][:, 1:] != -100
    expected = float((out.logits[:, :-1].argmax(-1)[keep] == batch["labels"][:, 1:][keep]).float().mean())
    assert metrics["eval_token_accuracy"] == pytest.approx(expected)
    assert metrics["eval_loss"] == pytest.approx(float(out.loss), rel=1e-5)
    model.train()
    assert model(**batch).logits is None  # training keeps the label-only loss
    model.eval()


# -- against transformers' own LLaVA, holding the same weights ------------------------------------------

VOCAB, IMG = 120, 119


def _llava_pair():
    torch.manual_seed(0)
    text = LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2, tie_word_embeddings=False)
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=32, patch_size=8, projection_dim=32)
    llava = LlavaForConditionalGeneration(LlavaConfig(vision_config=vision, text_config=text, image_token_id=IMG, image_seq_length=16, vision_feature_layer=-2)).eval()
    ours = MedRegAForConditionalGeneration(MedRegAConfig(vision_config=vision, text_config=text, image_token_id=IMG, vision_feature_layer=-2)).eval()
    ours.load_state_dict(convert_state_dict(llava.state_dict(), LLAVA_KEY_MAPPING))
    ids = torch.cat([torch.tensor([1, 5, 6]), torch.full((16,), IMG), torch.arange(10, 20)])[None]
    return llava, ours, ids, torch.randn(1, 3, 32, 32)


def test_inputs_embeds_with_pixel_values_like_llava():
    llava, ours, ids, px = _llava_pair()
    with torch.no_grad():
        embeds = ours.get_input_embeddings()(ids)
        ref = llava(inputs_embeds=embeds, pixel_values=px).logits
        got = ours(inputs_embeds=embeds, pixel_values=px).logits
        torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(got, ours(input_ids=ids, pixel_values=px).logits)


def test_get_image_features_like_llava():
    llava, ours, _, px = _llava_pair()
    with torch.no_grad():
        ref = llava.get_image_features(pixel_values=px, vision_feature_layer=-2, vision_feature_select_strategy="default", return_dict=True)
        got = ours.get_image_features(px, output_hidden_states=True)
        assert isinstance(got, BaseModelOutputWithPooling)
        torch.testing.assert_close(got.pooler_output, torch.stack(list(ref.pooler_output)), atol=1e-5, rtol=1e-5)
        assert len(got.hidden_states) == len(ref.hidden_states)
        as_tuple = ours.get_image_features(px, return_dict=False)
        torch.testing.assert_close(as_tuple[1], got.pooler_output)


def test_loading_through_auto_model(saved, tiny):
    model, processor = tiny
    loaded = AutoModelForImageTextToText.from_pretrained(saved)
    ids = processor(text="hi", return_tensors="pt")
    torch.testing.assert_close(loaded(**ids).logits, model(**ids).logits)
