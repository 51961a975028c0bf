"""``medrega.convert``: tiny transformers LLaVA / InternVL checkpoints, saved to disk, convert with equal logits."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import (
    AutoModelForImageTextToText,
    CLIPVisionConfig,
    InternVLConfig,
    InternVLForConditionalGeneration,
    InternVLVisionConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    SiglipVisionConfig,
)

import medrega
from medrega.cli import main
from medrega.converters import ConversionError
from medrega.grounding import IMAGE_TOKEN

pytestmark = pytest.mark.usefixtures("one_thread")


def text_config(vocab):
    return LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2)


def clip_config():
    return CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=32, patch_size=8, projection_dim=32)


@pytest.fixture
def llava_tokenizer(tiny_tokenizer):
    tiny_tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
    return tiny_tokenizer


def save_llava(path, tokenizer, *, layout="disk", tie=False, vision=None, **config):
    """A tiny random LLaVA with LLaVA's defaults (layer -2, "default", CLIP) saved in one of the three layouts."""
    torch.manual_seed(0)
    image_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    cfg = LlavaConfig(vision_config=vision or clip_config(), text_config=text_config(len(tokenizer)), image_token_id=image_id, image_seq_length=16, tie_word_embeddings=tie, **config)
    llava = LlavaForConditionalGeneration(cfg).eval()
    llava.save_pretrained(path)
    tokenizer.save_pretrained(path)
    if layout == "memory":  # v5 state_dict() names
        save_file({k: v.clone().contiguous() for k, v in llava.state_dict().items()}, path / "model.safetensors", metadata={"format": "pt"})
    elif layout == "legacy":  # pre-v5 hub names, as a .bin
        weights = load_file(path / "model.safetensors")
        (path / "model.safetensors").unlink()
        torch.save({k.replace("vision_tower.", "vision_tower.vision_model.", 1): v for k, v in weights.items()}, path / "pytorch_model.bin")
    return llava


def llava_inputs(image_id):
    ids = torch.cat([torch.tensor([1, 5, 6]), torch.full((16,), image_id), torch.arange(10, 20), torch.full((16,), image_id), torch.tensor([7, 8])])
    return torch.stack([ids, ids.flip(0)]), torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("tie", [False, True])
@pytest.mark.parametrize("layout", ["disk", "memory", "legacy"])
def test_llava_layouts_convert_with_equal_logits(tmp_path, llava_tokenizer, layout, tie):
    src, dst = tmp_path / "llava", tmp_path / "medrega"
    llava = save_llava(src, llava_tokenizer, layout=layout, tie=tie)
    vocab = llava.config.text_config.vocab_size
    medrega.convert(src, dst)
    model = AutoModelForImageTextToText.from_pretrained(dst).eval()
    assert type(model).__name__ == "MedRegAForConditionalGeneration"
    assert model.config.vision_feature_layer == -2 and model.config.tie_word_embeddings is tie
    assert model.config.image_token_id == llava.config.image_token_id and model.config.num_image_tokens == 16
    ids, px = llava_inputs(llava.config.image_token_id)
    with torch.no_grad():
        ref = llava(input_ids=ids, pixel_values=px).logits
        got = model(input_ids=ids, pixel_values=px).logits
    torch.testing.assert_close(got[..., :vocab], ref, atol=1e-5, rtol=1e-5)  # rows past `vocab`: medrega's added tokens
    if tie:
        assert model.get_output_embeddings().weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()
    new_rows = model.get_input_embeddings().weight[vocab:]
    torch.testing.assert_close(new_rows, llava.get_input_embeddings().weight.mean(0).expand_as(new_rows))


def test_converted_directory_loads_in_the_assistant_and_generates(tmp_path, llava_tokenizer):
    src, dst = tmp_path / "llava", tmp_path / "medrega"
    save_llava(src, llava_tokenizer)
    assert main(["convert", str(src), str(dst), "--max-shard-size", "5GB"]) == 0
    assistant = medrega.Assistant.from_pretrained(dst, max_new_tokens=4)
    assert assistant.codec.to_config()["type"] == "text" and assistant.codec.to_config()["scale"] == 1000
    image = np.random.default_rng(0).integers(0, 255, (40, 30, 3), dtype=np.uint8)
    result = assistant.ask(image, "what is shown?")
    assert isinstance(result.text, str)
    tokens = json.loads((dst / "config.json").read_text())["region_token_ids"]
    assert len(tokens) > 4 and assistant.processor.tokenizer.convert_tokens_to_ids(IMAGE_TOKEN) == assistant.model.config.image_token_id


def test_sharded_source_streams_one_shard_at_a_time(tmp_path, llava_tokenizer, monkeypatch):
    import medrega.converters.shards as shards

    src, dst = tmp_path / "llava", tmp_path / "medrega"
    llava = save_llava(src, llava_tokenizer)
    llava.save_pretrained(src, max_shard_size="30KB")
    (src / "model.safetensors").unlink(missing_ok=True)
    inputs = json.loads((src / "model.safetensors.index.json").read_text())["weight_map"]
    assert len(set(inputs.values())) > 2
    open_now, most = [], [0]
    real = shards.safe_open

    class Spy:
        def __init__(self, path, framework):
            self.inner = real(path, framework=framework)

        def __enter__(self):
            open_now.append(1)
            most[0] = max(most[0], len(open_now))
            return self.inner.__enter__()

        def __exit__(self, *exc):
            open_now.pop()
            return self.inner.__exit__(*exc)

    monkeypatch.setattr(shards, "safe_open", Spy)
    limit = 40_000
    medrega.convert(src, dst, max_shard_size=limit)
    assert most[0] == 1
    index = json.loads((dst / "model.safetensors.index.json").read_text())
    files = sorted(set(index["weight_map"].values()))
    assert len(files) > 2 and all((dst / f).stat().st_size <= limit + 10_000 for f in files)  # + header
    for name in files:
        tensors = load_file(dst / name)
        big = max(t.numel() * t.element_size() for t in tensors.values())
        assert sum(t.numel() * t.element_size() for t in tensors.values()) <= max(limit, big)
    model = AutoModelForImageTextToText.from_pretrained(dst).eval()
    ids, px = llava_inputs(llava.config.image_token_id)
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=ids, pixel_values=px).logits[..., : llava.config.text_config.vocab_size], llava(input_ids=ids, pixel_values=px).logits, atol=1e-5, rtol=1e-5)


def test_bf16_stays_bf16(tmp_path, llava_tokenizer):
    src, dst = tmp_path / "llava", tmp_path / "medrega"
    llava = save_llava(src, llava_tokenizer)
    llava.to(torch.bfloat16).save_pretrained(src)
    medrega.convert(src, dst)
    assert {t.dtype for t in load_file(dst / "model.safetensors").values()} == {torch.bfloat16}


def edit_config(path, **changes):
    cfg = json.loads((path / "config.json").read_text())
    cfg.update(changes)
    (path / "config.json").write_text(json.dumps(cfg))


def test_refusals_name_the_setting_or_key(tmp_path, llava_tokenizer):
    src = tmp_path / "llava"
    save_llava(src, llava_tokenizer)
    weights = load_file(src / "model.safetensors")

    edit_config(src, vision_feature_layer=[-2, -1])
    with pytest.raises(ConversionError, match=r"vision_feature_layer=\[-2, -1\]"):
        medrega.convert(src, tmp_path / "out")
    edit_config(src, vision_feature_layer=-2)

    save_file({k: v for k, v in weights.items() if k != "multi_modal_projector.linear_2.bias"}, src / "model.safetensors")
    with pytest.raises(ConversionError, match=r"lacks 1 key.*projector\.mlp\.linear_2\.bias"):
        medrega.convert(src, tmp_path / "out")
    save_file({**weights, "extra.weight": torch.zeros(2)}, src / "model.safetensors")
    with pytest.raises(ConversionError, match=r"unknown checkpoint key 'extra\.weight'"):
        medrega.convert(src, tmp_path / "out")
    save_file({**weights, "multi_modal_projector.linear_1.weight": torch.zeros(3, 3)}, src / "model.safetensors")
    with pytest.raises(ConversionError, match=r"multi_modal_projector\.linear_1\.weight' has shape \[3, 3\]"):
        medrega.convert(src, tmp_path / "out")
    assert not (tmp_path / "out").exists()  # refused before anything was written

    edit_config(src, model_type="internvl_chat")  # a LLaVA config.json under the InternVL-Chat model_type
    with pytest.raises(ConversionError, match="no 'vision_config'|no 'llm_config'"):
        medrega.convert(src, tmp_path / "out")
    edit_config(src, model_type="blip")
    with pytest.raises(ConversionError, match="'blip'.*not a source"):
        medrega.convert(src, tmp_path / "out")


def test_siglip_tower_with_llava_default_strategy_is_refused(tmp_path, llava_tokenizer):
    src = tmp_path / "llava"
    vision = SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=32, patch_size=8)
    save_llava(src, llava_tokenizer, vision=vision)
    with pytest.raises(ConversionError, match="vision_feature_select_strategy='default' with a siglip_vision_model tower of 0 prefix"):
        medrega.convert(src, tmp_path / "out")
    edit_config(src, vision_feature_select_strategy="full")
    medrega.convert(src, tmp_path / "out")  # "full" keeps every patch in both


def save_internvl(path, *, tie, rms):
    torch.manual_seed(0)
    vision = InternVLVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=[56, 56], patch_size=[14, 14],
        norm_type="rms_norm" if rms else "layer_norm", use_qk_norm=rms, attention_bias=not rms,
    )
    cfg = InternVLConfig(vision_config=vision, text_config=text_config(120), image_token_id=119, image_seq_length=4, tie_word_embeddings=tie)
    model = InternVLForConditionalGeneration(cfg).eval()
    model.save_pretrained(path)
    return model


@pytest.mark.parametrize(("tie", "rms"), [(True, True), (False, False)])
def test_internvl_converts_with_equal_logits(tmp_path, tie, rms):
    src, dst = tmp_path / "internvl", tmp_path / "medrega"
    ref_model = save_internvl(src, tie=tie, rms=rms)
    medrega.convert(src, dst)  # no tokenizer: the model alone
    assert not (dst / "processor_config.json").exists()
    model = AutoModelForImageTextToText.from_pretrained(dst).eval()
    assert model.config.num_image_tokens == 4 and model.config.tie_word_embeddings is tie
    assert {"InternVLVisionLayer", "LlamaDecoderLayer"} <= set(model._no_split_modules)  # device_map="auto" keeps layers whole
    ids = torch.cat([torch.tensor([1, 5]), torch.full((4,), 119), torch.arange(10, 16), torch.full((4,), 119), torch.tensor([7])])
    ids = torch.stack([ids, ids.flip(0)])
    px = torch.randn(4, 3, 56, 56, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=ids, pixel_values=px).logits, ref_model(input_ids=ids, pixel_values=px).logits, atol=1e-5, rtol=1e-5)


def test_internvl_final_layernorm_is_refused(tmp_path):
    src = tmp_path / "internvl"
    save_internvl(src, tie=True, rms=False)
    cfg = json.loads((src / "config.json").read_text())
    cfg["vision_config"]["use_mean_pooling"] = False
    (src / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConversionError, match="use_mean_pooling=False"):
        medrega.convert(src, tmp_path / "out")


def test_conversion_peak_memory_stays_near_one_shard(tmp_path, llava_tokenizer):
    """Measured, not inferred: a fresh process converts a ~100 MB checkpoint in 20 MB shards; its resident
    memory grows by about one input plus one output shard, far below the checkpoint's size."""
    import subprocess
    import sys

    small, src, dst = tmp_path / "small", tmp_path / "llava", tmp_path / "medrega"
    save_llava(small, llava_tokenizer)  # converted first, so that imports and caches are not counted
    torch.manual_seed(0)
    text = LlamaConfig(vocab_size=len(llava_tokenizer), hidden_size=512, intermediate_size=2048, num_hidden_layers=6, num_attention_heads=8, num_key_value_heads=8)
    cfg = LlavaConfig(vision_config=clip_config(), text_config=text, image_token_id=llava_tokenizer.convert_tokens_to_ids(IMAGE_TOKEN), image_seq_length=16)
    llava = LlavaForConditionalGeneration(cfg)
    total = sum(p.numel() * p.element_size() for p in llava.parameters())
    llava.save_pretrained(src, max_shard_size="20MB")
    llava_tokenizer.save_pretrained(src)
    del llava
    assert total > 90e6 and len(set(json.loads((src / "model.safetensors.index.json").read_text())["weight_map"].values())) >= 5
    script = (  # VmHWM: this process's peak resident memory (ru_maxrss would carry the parent's across exec)
        "import sys, medrega, medrega.converters\n"
        "def status(field):\n"
        "    return next(int(line.split()[1]) * 1024 for line in open('/proc/self/status') if line.startswith(field + ':'))\n"
        "medrega.convert(sys.argv[3], sys.argv[2] + '-small')\n"
        "before = status('VmHWM')\n"
        "medrega.convert(sys.argv[1], sys.argv[2], max_shard_size='20MB')\n"
        "print(status('VmHWM') - before)\n"
    )
    out = subprocess.run([sys.executable, "-c", script, str(src), str(dst), str(small)], capture_output=True, text=True, check=True)
    growth = int(out.stdout.strip().splitlines()[-1])
    assert growth < 0.5 * total, (growth, total)  # one input + one output shard is at most ~40 MB of ~100 MB
    assert (dst / "model.safetensors.index.json").exists()
