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
