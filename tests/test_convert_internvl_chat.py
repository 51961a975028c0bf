"""``medrega.convert`` of the original InternVL-Chat remote-code layout (MedRegA's release), against a reference
forward written here from the original algorithm (InternViT blocks with fused qkv, QK RMSNorm and layer scale,
CLS dropped, pixel shuffle v1/v2, ``mlp1``); and MedRegA's conventions in the converted directory."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from transformers import AutoModelForImageTextToText, LlamaConfig, LlamaForCausalLM

import medrega
from medrega.converters import ConversionError

pytestmark = pytest.mark.usefixtures("one_thread")

C, HEADS, MLP, LAYERS, PATCH, SIDE = 32, 2, 64, 2, 14, 56  # 4x4 patches -> 2x2 merged tokens
INTERNVL_TOKENS = ["<img>", "</img>", "<IMG_CONTEXT>", "<quad>", "</quad>", "<ref>", "</ref>", "<box>", "</box>"]
MEDREGA_PROMPT = (
    "You are a helpful medical assistant. You are required to answer the question based on the medical image. <image>\n"
    "What does this image show? Answer the question using a single word or phrase."
)


@pytest.fixture
def chat_tokenizer(tiny_tokenizer):
    """A tokenizer as MedRegA's: the chat markers are the base vocabulary's (Yi), InternVL's tokens added special."""
    tiny_tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]}, replace_extra_special_tokens=False)
    tiny_tokenizer.add_tokens(INTERNVL_TOKENS, special_tokens=True)
    return tiny_tokenizer


def vision_weights(gen, *, tower_side=SIDE):
    r = lambda *s, scale=0.2: torch.randn(*s, generator=gen) * scale  # noqa: E731
    grid = (tower_side // PATCH) ** 2
    w = {
        "vision_model.embeddings.class_embedding": r(1, 1, C),
        "vision_model.embeddings.position_embedding": r(1, 1 + grid, C),
        "vision_model.embeddings.patch_embedding.weight": r(C, 3, PATCH, PATCH, scale=0.05),
        "vision_model.embeddings.patch_embedding.bias": r(C),
    }
    for i in range(LAYERS):
        p = f"vision_model.encoder.layers.{i}."
        w.update({
            p + "attn.qkv.weight": r(3 * C, C),
            p + "attn.q_norm.weight": 1 + r(C),
            p + "attn.k_norm.weight": 1 + r(C),
            p + "attn.proj.weight": r(C, C),
            p + "attn.proj.bias": r(C),
            p + "mlp.fc1.weight": r(MLP, C),
            p + "mlp.fc1.bias": r(MLP),
            p + "mlp.fc2.weight": r(C, MLP),
            p + "mlp.fc2.bias": r(C),
            p + "norm1.weight": 1 + r(C),
            p + "norm2.weight": 1 + r(C),
            p + "ls1": 0.5 + r(C),
            p + "ls2": 0.5 + r(C),
        })
    return w


def save_internvl_chat(path, tokenizer, *, ps_version, tower_side=SIDE, **changes):
    """A tiny checkpoint in the original InternVL-Chat layout: config.json, two safetensors shards + index."""
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    llm_config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=48, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2)
    llm = LlamaForCausalLM(llm_config).eval()
    weights = vision_weights(gen, tower_side=tower_side)
    weights.update({
        "mlp1.0.weight": 1 + 0.2 * torch.randn(4 * C, generator=gen),
        "mlp1.0.bias": 0.2 * torch.randn(4 * C, generator=gen),
        "mlp1.1.weight": 0.2 * torch.randn(48, 4 * C, generator=gen),
        "mlp1.1.bias": 0.2 * torch.randn(48, generator=gen),
        "mlp1.3.weight": 0.2 * torch.randn(48, 48, generator=gen),
        "mlp1.3.bias": 0.2 * torch.randn(48, generator=gen),
    })
    weights.update({f"language_model.{k}": v.clone() for k, v in llm.state_dict().items()})
    config = {
        "model_type": "internvl_chat",
        "architectures": ["InternVLChatModel"],
        "auto_map": {"AutoModel": "modeling_internvl_chat.InternVLChatModel"},
        "vision_config": {
            "model_type": "intern_vit_6b", "hidden_size": C, "num_hidden_layers": LAYERS, "num_attention_heads": HEADS,
            "intermediate_size": MLP, "image_size": tower_side, "patch_size": PATCH, "qkv_bias": False, "qk_normalization": True,
            "norm_type": "rms_norm", "layer_norm_eps": 1e-6, "initializer_factor": 0.1, "hidden_act": "gelu", "num_channels": 3,
        },
        "llm_config": {**llm_config.to_dict(), "architectures": ["LlamaForCausalLM"]},
        "downsample_ratio": 0.5, "ps_version": ps_version, "select_layer": -1, "force_image_size": SIDE,
        "template": "Hermes-2", "dynamic_image_size": False, "use_thumbnail": False, "use_backbone_lora": 0, "use_llm_lora": 0,
        **changes,
    }
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(config))
    write_shards(path, weights)
    tokenizer.save_pretrained(path)
    return weights, llm


def write_shards(path, weights):
    keys = sorted(weights)
    half = {"model-00001-of-00002.safetensors": keys[::2], "model-00002-of-00002.safetensors": keys[1::2]}
    for name, part in half.items():
        save_file({k: weights[k].contiguous() for k in part}, path / name, metadata={"format": "pt"})
    index = {"metadata": {}, "weight_map": {k: name for name, part in half.items() for k in part}}
    (path / "model.safetensors.index.json").write_text(json.dumps(index))


# -- the reference: the original InternVL-Chat forward, from its algorithm --------------------------------
def rms(x, weight, eps=1e-6):
    x32 = x.float()
    return weight * (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)


def reference_vision(w, pixel_values, tower_side=SIDE):
    x = F.conv2d(pixel_values, w["vision_model.embeddings.patch_embedding.weight"], w["vision_model.embeddings.patch_embedding.bias"], stride=PATCH)
    b, _, gh, gw = x.shape
    x = x.flatten(2).transpose(1, 2)
    x = torch.cat([w["vision_model.embeddings.class_embedding"].expand(b, 1, -1), x], dim=1)
    pos = w["vision_model.embeddings.position_embedding"]
    old = tower_side // PATCH
    grid = pos[:, 1:].float().reshape(1, old, old, -1).permute(0, 3, 1, 2)  # InternViT's _get_pos_embed, every forward
    grid = F.interpolate(grid, size=(gh, gw), mode="bicubic", align_corners=False).reshape(1, -1, gh * gw).permute(0, 2, 1)
    x = x + torch.cat([pos[:, :1], grid], dim=1)
    d = C // HEADS
    for i in range(LAYERS):
        p = f"vision_model.encoder.layers.{i}."
        h = rms(x, w[p + "norm1.weight"])
        n = h.shape[1]
        q, k, v = (h @ w[p + "attn.qkv.weight"].T).reshape(b, n, 3, HEADS, d).permute(2, 0, 3, 1, 4).unbind(0)
        q = rms(q.transpose(1, 2).flatten(-2, -1), w[p + "attn.q_norm.weight"]).view(b, n, HEADS, d).transpose(1, 2)
        k = rms(k.transpose(1, 2).flatten(-2, -1), w[p + "attn.k_norm.weight"]).view(b, n, HEADS, d).transpose(1, 2)
        attn = ((q * d**-0.5) @ k.transpose(-2, -1)).softmax(-1) @ v
        attn = attn.transpose(1, 2).reshape(b, n, C) @ w[p + "attn.proj.weight"].T + w[p + "attn.proj.bias"]
        x = x + attn * w[p + "ls1"]
        h = rms(x, w[p + "norm2.weight"])
        h = F.gelu(h @ w[p + "mlp.fc1.weight"].T + w[p + "mlp.fc1.bias"]) @ w[p + "mlp.fc2.weight"].T + w[p + "mlp.fc2.bias"]
        x = x + h * w[p + "ls2"]
    return x  # last_hidden_state (select_layer -1)


def reference_pixel_shuffle(x, scale, ps_version):
    n, wd, ht, c = x.size()
    x = x.view(n, wd, int(ht * scale), int(c / scale)).permute(0, 2, 1, 3).contiguous()
    x = x.view(n, int(ht * scale), int(wd * scale), int(c / (scale * scale)))
    if ps_version != "v1":
        x = x.permute(0, 2, 1, 3).contiguous()
    return x


def reference_logits(w, llm, input_ids, pixel_values, image_id, ps_version, tower_side=SIDE):
    vit = reference_vision(w, pixel_values, tower_side)[:, 1:]  # CLS dropped
    side = int(vit.shape[1] ** 0.5)
    vit = reference_pixel_shuffle(vit.reshape(vit.shape[0], side, side, -1), 0.5, ps_version)
    vit = vit.reshape(vit.shape[0], -1, vit.shape[-1])
    vit = F.layer_norm(vit, (4 * C,), w["mlp1.0.weight"], w["mlp1.0.bias"], eps=1e-5)
    vit = F.gelu(vit @ w["mlp1.1.weight"].T + w["mlp1.1.bias"]) @ w["mlp1.3.weight"].T + w["mlp1.3.bias"]
    embeds = llm.get_input_embeddings()(input_ids)
    b, n, c = embeds.shape
    embeds = embeds.reshape(b * n, c)
    selected = input_ids.reshape(-1) == image_id
    embeds[selected] = vit.reshape(-1, c).to(embeds.dtype)
    return llm(inputs_embeds=embeds.reshape(b, n, c)).logits


def chat_inputs(tokenizer):
    start, ctx, end = (tokenizer.convert_tokens_to_ids(t) for t in ("<img>", "<IMG_CONTEXT>", "</img>"))
    image = [start, *[ctx] * 4, end]
    ids = torch.tensor([1, 5, *image, *range(10, 20), *image, 7, 8])
    return torch.stack([ids, ids.flip(0)]), torch.randn(4, 3, SIDE, SIDE, generator=torch.Generator().manual_seed(1)), ctx


@pytest.mark.parametrize("ps_version", ["v2", "v1"])
def test_internvl_chat_converts_to_the_original_logits(tmp_path, chat_tokenizer, ps_version):
    src, dst = tmp_path / "internvl_chat", tmp_path / "medrega"
    weights, llm = save_internvl_chat(src, chat_tokenizer, ps_version=ps_version)
    size = len(chat_tokenizer)
    medrega.convert(src, dst, max_shard_size="20KB")
    model = AutoModelForImageTextToText.from_pretrained(dst).eval()
    assert model.config.projector_config["pixel_shuffle_version"] == ps_version and model.config.num_image_tokens == 4
    assert model.config.region_codec["scale"] == 999 and model.config.max_tiles == 0
    ids, px, ctx = chat_inputs(chat_tokenizer)
    assert model.config.image_token_id == ctx and model.config.text_config.vocab_size == size
    with torch.no_grad():
        ref = reference_logits(weights, llm, ids, px, ctx, ps_version)
        got = model(input_ids=ids, pixel_values=px).logits
        other = reference_logits(weights, llm, ids, px, ctx, "v2" if ps_version == "v1" else "v1")
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
    assert (got - other).abs().max() > 1e-3  # the token order matters: v1 and v2 differ

    assistant = medrega.Assistant.from_pretrained(dst, max_new_tokens=4)
    assert len(assistant.processor.tokenizer) == size  # the tokenizer did not grow
    image = np.random.default_rng(0).integers(0, 255, (40, 30, 3), dtype=np.uint8)
    assert isinstance(assistant.ask(image, "what is shown?").text, str)


@pytest.mark.parametrize("ps_version", ["v2", "v1"])
def test_position_embeddings_resized_once_to_force_image_size(tmp_path, chat_tokenizer, ps_version):
    src, dst = tmp_path / "internvl_chat", tmp_path / "medrega"
    weights, llm = save_internvl_chat(src, chat_tokenizer, ps_version=ps_version, tower_side=28)
    medrega.convert(src, dst)
    model = AutoModelForImageTextToText.from_pretrained(dst).eval()
    ids, px, ctx = chat_inputs(chat_tokenizer)
    with torch.no_grad():
        ref = reference_logits(weights, llm, ids, px, ctx, ps_version, tower_side=28)
        torch.testing.assert_close(model(input_ids=ids, pixel_values=px).logits, ref, atol=1e-5, rtol=1e-5)


def test_converted_processor_renders_medrega_prompts_and_reads_its_boxes(tmp_path, chat_tokenizer):
    src, dst = tmp_path / "internvl_chat", tmp_path / "medrega"
    save_internvl_chat(src, chat_tokenizer, ps_version="v2")  # the conventions do not depend on the token order
    medrega.convert(src, dst)
    saved = json.loads((dst / "processor_config.json").read_text())
    assert saved["image_token"] == "<IMG_CONTEXT>" and saved["image_wrapper"] == ["<img>", "</img>"]
    processor = medrega.MedRegAProcessor.from_pretrained(dst)
    tok = processor.tokenizer
    prompt = processor.render([{"role": "user", "content": MEDREGA_PROMPT}], add_generation_prompt=True)
    expected = f"<|im_start|>system\nAnswer the questions.<|im_end|><|im_start|>user\n{MEDREGA_PROMPT}<|im_end|><|im_start|>assistant\n"
    assert prompt == expected
    history = [{"role": "user", "content": MEDREGA_PROMPT}, {"role": "assistant", "content": "heart"}, {"role": "user", "content": "and?"}]
    assert processor.render(history, add_generation_prompt=True) == (
        f"<|im_start|>system\nAnswer the questions.<|im_end|><|im_start|>user\n{MEDREGA_PROMPT}<|im_end|>"
        "<|im_start|>assistant\nheart<|im_end|><|im_start|>user\nand?<|im_end|><|im_start|>assistant\n"
    )
    image = np.zeros((40, 30, 3), dtype=np.uint8)
    ids = processor(text=prompt, images=[image])["input_ids"][0]
    run = "<img>" + "<IMG_CONTEXT>" * 4 + "</img>"
    assert tok.decode(ids, skip_special_tokens=False) == expected.replace("<image>", run)  # MedRegA's query string
    ctx = tok.convert_tokens_to_ids("<IMG_CONTEXT>")
    at = ids.index(ctx)
    assert ids[at - 1 : at + 5] == tok.convert_tokens_to_ids(["<img>", *["<IMG_CONTEXT>"] * 4, "</img>"])

    # MedRegA's outputs: tagged, and tag-stripped as its own decoding leaves them; boxes on 0..999
    size = (1998, 999)
    for answer in ("<ref>右肺</ref><box>[[102, 106, 481, 910]]</box>", "右肺[[102, 106, 481, 910]]"):
        generated = tok(answer + "<|im_end|>", add_special_tokens=False)["input_ids"]
        (decoded,) = processor.post_process([generated], [size])
        (g,) = decoded.groundings
        assert g.phrase == "右肺" and decoded.text.startswith("右肺")
        np.testing.assert_allclose(g.boxes[0], (102 / 999 * 1998, 106, 481 / 999 * 1998, 910), atol=1e-6)

    # training-side encoding keeps the labels on the answer only, with the Hermes-2 end of turn
    record = processor.encode_conversation([medrega.data.Turn("user", MEDREGA_PROMPT), medrega.data.Turn("assistant", "heart")], [image])
    labelled = [i for i, lab in zip(record["input_ids"].tolist(), record["labels"].tolist()) if lab != -100]
    assert tok.decode(labelled, skip_special_tokens=False) == "heart<|im_end|>"


def test_unknown_and_missing_keys_are_named(tmp_path, chat_tokenizer):
    src = tmp_path / "internvl_chat"
    weights, _ = save_internvl_chat(src, chat_tokenizer, ps_version="v2")
    write_shards(src, {**weights, "vision_model.encoder.layers.0.attn.extra.weight": torch.zeros(2)})
    with pytest.raises(ConversionError, match=r"unknown checkpoint key 'vision_model\.encoder\.layers\.0\.attn\.extra\.weight'"):
        medrega.convert(src, tmp_path / "out")
    write_shards(src, {k: v for k, v in weights.items() if k != "vision_model.encoder.layers.1.ls2"})
    with pytest.raises(ConversionError, match=r"lacks 1 key.*vision_tower\.model\.encoder\.layer\.1\.lambda_2"):
        medrega.convert(src, tmp_path / "out")
    write_shards(src, {**weights, "vision_model.encoder.layers.0.attn.qkv.weight": torch.zeros(3 * C + 1, C)})
    with pytest.raises(ConversionError, match=r"attn\.qkv\.weight' has shape \[97, 32\]"):
        medrega.convert(src, tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"ps_version": "v3"}, r"ps_version='v3'"),
        ({"downsample_ratio": 1.0}, r"downsample_ratio=1\.0"),
        ({"template": "internlm2-chat"}, r"template='internlm2-chat'"),
        ({"use_llm_lora": 16}, r"use_llm_lora=16"),
        ({"llm_config": {"model_type": "internlm2", "architectures": ["InternLM2ForCausalLM"]}}, r"llm_config model_type='internlm2'"),
    ],
)
def test_settings_medrega_cannot_express_are_refused(tmp_path, chat_tokenizer, changes, message):
    src = tmp_path / "internvl_chat"
    save_internvl_chat(src, chat_tokenizer, **{"ps_version": "v1", **changes})
    with pytest.raises(ConversionError, match=message):
        medrega.convert(src, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_no_tokenizer_needs_the_image_context_id(tmp_path, chat_tokenizer):
    src = tmp_path / "internvl_chat"
    save_internvl_chat(src, chat_tokenizer, ps_version="v2")
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja"):
        (src / name).unlink(missing_ok=True)
    with pytest.raises(ConversionError, match="image_token_id="):
        medrega.convert(src, tmp_path / "out")
    ctx = chat_tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>")
    medrega.convert(src, tmp_path / "out", image_token_id=ctx)
    assert AutoModelForImageTextToText.from_pretrained(tmp_path / "out").config.image_token_id == ctx
