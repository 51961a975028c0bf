"""The tiny preset: size, local bilingual tokenizer, structured initialisation, real loading path."""

import pytest
import torch

from medrega import MedRegAForConditionalGeneration, MedRegAProcessor, presets


@pytest.fixture(scope="module")
def tiny():
    return presets.build("tiny", seed=0)


def test_tiny_is_small_and_bilingual(tiny):
    model, processor = tiny
    assert sum(p.numel() for p in model.parameters()) < 5_000_000
    tok = processor.tokenizer
    for text in ("左肺上叶见一结节，建议随访。", "The heart size is normal."):
        assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text
    assert model.config.num_image_tokens == processor.num_image_tokens == 16


def test_structured_init_of_loc_tokens_and_patch_positions(tiny):
    model, processor = tiny
    ids = processor.tokenizer.convert_tokens_to_ids([f"<loc_{k}>" for k in (100, 101, 900)])
    rows = model.get_input_embeddings().weight[ids]
    near = torch.cosine_similarity(rows[0], rows[1], dim=0)
    far = torch.cosine_similarity(rows[0], rows[2], dim=0)
    assert near > 0.8 and far < near
    pos = model.vision_tower.model.pos_embed[0, 1:]  # (64 patches, dim) after the class token
    assert torch.cosine_similarity(pos[0], pos[1], dim=0) > torch.cosine_similarity(pos[0], pos[63], dim=0)


def test_same_seed_same_model_and_real_loading_path(tiny, tmp_path):
    model, processor = tiny
    again, _ = presets.build("tiny", seed=0)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    loaded = MedRegAForConditionalGeneration.from_pretrained(tmp_path)
    assert MedRegAProcessor.from_pretrained(tmp_path).num_image_tokens == processor.num_image_tokens
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values()))
    with pytest.raises(ValueError, match="build_from_parts"):
        presets.build("siglip-qwen2.5-7b")


def _tiny_language_model_dir(path, tokenizer):
    """A tiny Llama and its (unprepared) tokenizer, saved as a downloaded language model would be."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    torch.manual_seed(0)
    text = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2, tie_word_embeddings=False)
    lm = AutoModelForCausalLM.from_config(text)
    lm.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return lm


def test_build_from_parts_mean_initialises_the_new_rows(tmp_path, tiny_tokenizer):
    lm = _tiny_language_model_dir(tmp_path / "lm", tiny_tokenizer)
    old = len(tiny_tokenizer)
    model, processor = presets.build_from_parts(
        "clip-qwen2.5-1.5b", vision="vit_tiny_patch16_224", language_model=str(tmp_path / "lm"), vision_pretrained=False, image_size=32, timm_kwargs={"depth": 1}
    )
    assert len(processor.tokenizer) > old + 1000 and model.config.text_config.vocab_size == len(processor.tokenizer)
    new_rows = model.get_input_embeddings().weight[old:]
    torch.testing.assert_close(model.get_input_embeddings().weight[:old], lm.get_input_embeddings().weight)
    torch.testing.assert_close(new_rows, lm.get_input_embeddings().weight.mean(0).expand_as(new_rows))
    torch.testing.assert_close(model.get_output_embeddings().weight[old:], lm.lm_head.weight.mean(0).expand_as(new_rows))


def test_region_token_ids_follow_one_rule_in_both_builders(tiny, tmp_path):
    """Both builders keep every token medrega adds (chat markers, region tokens, <image>) trainable."""
    from medrega.grounding import IMAGE_TOKEN, REF_START
    from medrega.processing import IM_END, IM_START

    model, processor = tiny
    tokenizer = presets.tiny_tokenizer()
    expected = MedRegAProcessor.prepare_tokenizer(tokenizer).ids
    assert model.config.region_token_ids == expected
    assert {IM_START, IM_END, IMAGE_TOKEN, REF_START, "<loc_0>"} <= set(processor.tokenizer.convert_ids_to_tokens(expected))
    lm = _tiny_language_model_dir(tmp_path / "lm", tokenizer)
    assembled = MedRegAForConditionalGeneration.from_parts(vision="vit_tiny_patch16_224", language_model=lm, tokenizer=tokenizer, vision_pretrained=False, image_size=32, timm_kwargs={"depth": 1})
    assert assembled.config.region_token_ids == model.config.region_token_ids


def test_tiny_with_more_bins_adds_their_tokens():
    model, processor = presets.build("tiny", region_codec={"type": "loc", "bins": 1200}, hidden_size=32, num_layers=1, vision_layers=1)
    loc = processor.tokenizer.convert_tokens_to_ids("<loc_1100>")
    assert isinstance(loc, int) and loc in model.config.region_token_ids
    assert model.config.text_config.vocab_size == len(processor.tokenizer)
    assert model.config.region_codec == {"type": "loc", "max_images": 16, "bins": 1200}
