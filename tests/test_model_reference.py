"""Parity with transformers' ``LlavaForConditionalGeneration`` and building from pretrained parts."""

import pytest
import torch
from transformers import (
    AutoModelForCausalLM,
    CLIPVisionConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    SiglipVisionConfig,
    SiglipVisionModel,
)

from medrega.models import (
    LLAVA_KEY_MAPPING,
    MedRegAConfig,
    MedRegAForConditionalGeneration,
    convert_state_dict,
    image_token_count,
)

VOCAB, IMG = 120, 119


pytestmark = pytest.mark.usefixtures("one_thread")



def text_config(vocab=VOCAB):
    return LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2, tie_word_embeddings=False)


def clip_config():
    return CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=32, patch_size=8, projection_dim=32)


@pytest.mark.parametrize("layer", [-2, -1])
def test_logits_equal_llava(layer):
    torch.manual_seed(0)
    llava_cfg = LlavaConfig(vision_config=clip_config(), text_config=text_config(), image_token_id=IMG, image_seq_length=16, vision_feature_layer=layer, vision_feature_select_strategy="default")
    llava = LlavaForConditionalGeneration(llava_cfg).eval()
    ours_cfg = MedRegAConfig(vision_config=clip_config(), text_config=text_config(), image_token_id=IMG, vision_feature_layer=layer, vision_feature_select_strategy="default")
    ours = MedRegAForConditionalGeneration(ours_cfg).eval()
    assert ours.config.num_image_tokens == 16  # 4x4 patches, CLS dropped: counted when the model is built
    missing, unexpected = ours.load_state_dict(convert_state_dict(llava.state_dict(), LLAVA_KEY_MAPPING), strict=False)
    assert not unexpected and not missing
    ids = torch.cat([torch.tensor([1, 5, 6]), torch.full((16,), IMG), torch.arange(10, 20), torch.full((16,), IMG), torch.tensor([7, 8])])
    ids = torch.stack([ids, ids.flip(0)])
    px = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        ref = llava(input_ids=ids, pixel_values=px).logits
        got = ours(input_ids=ids, pixel_values=px).logits
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)


def test_siglip_tower_keeps_all_patches():
    vision = SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=32, patch_size=8)
    cfg = MedRegAConfig(vision_config=vision, text_config=text_config(), image_token_id=IMG)
    assert image_token_count(cfg) == 16 and cfg.image_mean == [0.5, 0.5, 0.5]


def test_from_parts_with_local_dirs(tmp_path, tiny_tokenizer):
    torch.manual_seed(0)
    lm = AutoModelForCausalLM.from_config(text_config(len(tiny_tokenizer)))
    lm.save_pretrained(tmp_path / "lm")
    SiglipVisionModel(SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=32, patch_size=8)).save_pretrained(tmp_path / "vision")
    old = len(tiny_tokenizer)
    model = MedRegAForConditionalGeneration.from_parts(vision=tmp_path / "vision", language_model=tmp_path / "lm", tokenizer=tiny_tokenizer, projector={"pixel_shuffle": 0.5, "layer_norm": True})
    assert len(tiny_tokenizer) > old + 1000 and model.config.text_config.vocab_size == len(tiny_tokenizer)
    emb = model.get_input_embeddings().weight
    torch.testing.assert_close(emb[:old], lm.get_input_embeddings().weight)  # pretrained rows kept
    torch.testing.assert_close(emb[-1], lm.get_input_embeddings().weight.mean(0))  # new rows at the mean
    torch.testing.assert_close(model.get_output_embeddings().weight[old + 5], lm.lm_head.weight.mean(0))
    torch.testing.assert_close(model.language_model.model.layers[0].mlp.up_proj.weight, lm.model.layers[0].mlp.up_proj.weight)
    image_id = tiny_tokenizer.convert_tokens_to_ids("<image>")
    assert model.config.image_token_id == image_id and model.config.num_image_tokens == 4
    assert image_id in model.config.region_token_ids
    ids = torch.tensor([[3, 4] + [image_id] * 4 + [tiny_tokenizer.convert_tokens_to_ids("<loc_7>"), 5]])
    assert model(input_ids=ids, pixel_values=torch.randn(1, 3, 32, 32)).logits.shape == (1, 8, len(tiny_tokenizer))
    with pytest.raises(OSError, match="could not load the language model"):
        MedRegAForConditionalGeneration.from_parts(vision=tmp_path / "vision", language_model=tmp_path / "missing", tokenizer=tiny_tokenizer)
    with pytest.raises(FileNotFoundError, match="neither a local model directory nor a timm"):
        MedRegAForConditionalGeneration.from_parts(vision="no_such_net", language_model=lm, tokenizer=tiny_tokenizer)
    timm_model = MedRegAForConditionalGeneration.from_parts(vision="vit_tiny_patch16_224", language_model=lm, tokenizer=tiny_tokenizer, vision_pretrained=False, image_size=32, timm_kwargs={"depth": 1})
    assert timm_model.config.num_image_tokens == 4


def test_from_parts_mean_initialises_rows_of_tokens_added_before(tmp_path, tiny_tokenizer):
    """A tokenizer that already holds medrega's tokens: the rows the resize adds still start at the mean."""
    from medrega.processing import MedRegAProcessor

    torch.manual_seed(0)
    lm = AutoModelForCausalLM.from_config(text_config(len(tiny_tokenizer)))
    old = len(tiny_tokenizer)
    MedRegAProcessor.prepare_tokenizer(tiny_tokenizer)
    model = MedRegAForConditionalGeneration.from_parts(vision="vit_tiny_patch16_224", language_model=lm, tokenizer=tiny_tokenizer, vision_pretrained=False, image_size=32, timm_kwargs={"depth": 1})
    new_rows = model.get_input_embeddings().weight[old:]
    assert new_rows.shape[0] == len(tiny_tokenizer) - old > 1000
    torch.testing.assert_close(new_rows, lm.get_input_embeddings().weight[:old].mean(0).expand_as(new_rows))
    torch.testing.assert_close(model.get_output_embeddings().weight[old:], lm.lm_head.weight[:old].mean(0).expand_as(new_rows))
