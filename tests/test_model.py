"""MedRegA model: merge, loss, generation, save/load, stages, LoRA, building from parts, tiling."""

import pytest
import torch

import medrega.models as M
from medrega.models import MedRegAConfig, MedRegAForConditionalGeneration, plan_tiles, tiny_config

VOCAB, IMG = 300, 299
N_TOK = 4  # 32-px images, 16-px patches -> 2x2 patches


pytestmark = pytest.mark.usefixtures("one_thread")



def make_model(seed=0, **kw):
    torch.manual_seed(seed)
    settings = {"hidden_size": 32, "num_layers": 2, "vision_width": 32, "vision_layers": 1, "image_size": 32, "patch_size": 16}
    cfg = tiny_config(VOCAB, IMG, **{**settings, **kw})
    return MedRegAForConditionalGeneration(cfg).eval()


@pytest.fixture(scope="module")
def model():
    return make_model()


def sample(n_images, text=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    parts = []
    for _ in range(n_images):
        parts += [torch.randint(3, 200, (2,), generator=g), torch.full((N_TOK,), IMG)]
    parts.append(torch.randint(3, 200, (text,), generator=g))
    return torch.cat(parts)


def images(n, seed=0):
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def test_config_round_trip_and_validation(tmp_path):
    cfg = tiny_config(VOCAB, IMG, hidden_size=32, num_layers=2, vision_width=32, vision_layers=1, image_size=32, pixel_shuffle=0.5, patch_size=8)
    assert cfg.num_image_tokens == 4 and cfg.image_size == 32  # 4x4 patches shuffled by 2
    cfg.save_pretrained(tmp_path)
    back = MedRegAConfig.from_pretrained(tmp_path)
    assert back.to_dict() == cfg.to_dict()
    assert back.vision_config.timm_kwargs["patch_size"] == 8
    with pytest.raises(ValueError, match="unknown projector_config keys"):
        tiny_config(VOCAB, IMG, projector_config={"layers": 3})
    with pytest.raises(ValueError, match="image_token_id"):
        tiny_config(VOCAB, VOCAB + 5)
    with pytest.raises(ValueError, match="pixel_shuffle ratio"):
        MedRegAConfig(vision_config=cfg.vision_config, text_config=cfg.text_config, image_token_id=1, projector_config={"pixel_shuffle": 0.3})
    timm_dict = MedRegAConfig(vision_config={"timm_name": "vit_tiny_patch16_224", "kwargs": {"depth": 1}, "image_size": 64}, text_config=cfg.text_config, image_token_id=1)
    assert isinstance(timm_dict.vision_config, M.TimmVisionConfig) and M.image_token_count(timm_dict) == 16
    assert timm_dict.num_image_tokens is None  # counted when a model is built (test_num_image_tokens_...)


def test_num_image_tokens_is_counted_by_builders_and_checked_by_the_model():
    cfg = tiny_config(VOCAB, IMG, hidden_size=32, num_layers=2, vision_width=32, vision_layers=1, image_size=32, patch_size=8)
    assert cfg.num_image_tokens == 16  # the builder counts it: 4x4 patches
    bare = MedRegAConfig(vision_config=cfg.vision_config, text_config=cfg.text_config, image_token_id=IMG)
    assert bare.num_image_tokens is None  # a config alone builds no tower
    assert MedRegAForConditionalGeneration(bare).config.num_image_tokens == 16
    wrong = MedRegAConfig(vision_config=cfg.vision_config, text_config=cfg.text_config, image_token_id=IMG, num_image_tokens=9)
    with pytest.raises(ValueError, match="num_image_tokens is 9 but the vision tower and projector give 16"):
        MedRegAForConditionalGeneration(wrong)
    with pytest.raises(ValueError, match="pixel shuffle by 3"):
        M.image_token_count(MedRegAConfig(vision_config=cfg.vision_config, text_config=cfg.text_config, projector_config={"pixel_shuffle": 1 / 3}))


def test_tie_word_embeddings_is_the_language_models():
    cfg = tiny_config(VOCAB, IMG, hidden_size=32, num_layers=2, vision_width=32, vision_layers=1, image_size=32)
    assert cfg.tie_word_embeddings is False
    with pytest.raises(ValueError, match="tie_word_embeddings=True contradicts text_config.tie_word_embeddings=False"):
        MedRegAConfig(vision_config=cfg.vision_config, text_config=cfg.text_config, tie_word_embeddings=True)
    tied_text = {**cfg.text_config.to_dict(), "tie_word_embeddings": True}
    assert MedRegAConfig(vision_config=cfg.vision_config, text_config=tied_text).tie_word_embeddings is True
    assert MedRegAConfig(vision_config=cfg.vision_config, text_config=tied_text, tie_word_embeddings=True).tie_word_embeddings is True


def test_forward_backward_loss_only_where_labels(model):
    ids = torch.stack([sample(1, seed=1), sample(1, seed=2)])
    labels = ids.clone()
    labels[:, :8] = -100
    px = images(2)
    out = model(input_ids=ids, pixel_values=px, labels=labels, return_logits=False)
    assert out.logits is None
    logits = model(input_ids=ids, pixel_values=px).logits
    ref = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, VOCAB), labels[:, 1:].reshape(-1), ignore_index=-100)
    torch.testing.assert_close(out.loss, ref)
    n = int((labels[:, 1:] != -100).sum())
    summed = model(input_ids=ids, pixel_values=px, labels=labels, num_items_in_batch=3 * n).loss
    torch.testing.assert_close(summed, ref / 3)
    model.train()
    out = model(input_ids=ids, pixel_values=px, labels=labels)
    out.loss.backward()
    grads = {k: p.grad for k, p in model.named_parameters()}
    assert grads["projector.mlp.linear_1.weight"].abs().sum() > 0
    assert grads["vision_tower.model.blocks.0.attn.qkv.weight"].abs().sum() > 0
    model.zero_grad(set_to_none=True)
    model.eval()
    no_labels = torch.full_like(labels, -100)
    empty = model(input_ids=ids, pixel_values=px, labels=no_labels).loss
    assert empty.item() == 0.0


def test_multi_image_order_and_mixed_batch(model):
    a, b = images(1, seed=3), images(1, seed=4)
    ids = sample(2, seed=5)[None]
    ab = model(input_ids=ids, pixel_values=torch.cat([a, b])).logits
    ba = model(input_ids=ids, pixel_values=torch.cat([b, a])).logits
    assert not torch.allclose(ab, ba)
    same = model(input_ids=ids, pixel_values=torch.cat([a, a]))
    feats = same.image_hidden_states
    torch.testing.assert_close(feats[0], feats[1])
    # a batch mixing 0, 1 and 2 images equals each sample run alone
    rows = [sample(0, text=18, seed=6), sample(1, text=12, seed=7), sample(2, seed=8)]
    px = images(3, seed=9)
    batch = model(input_ids=torch.stack(rows), pixel_values=px).logits
    alone = [model(input_ids=rows[0][None]).logits, model(input_ids=rows[1][None], pixel_values=px[:1]).logits, model(input_ids=rows[2][None], pixel_values=px[1:]).logits]
    for i in range(3):
        torch.testing.assert_close(batch[i], alone[i][0], atol=1e-5, rtol=1e-5)


def test_placeholder_mismatch_names_sample(model):
    rows = torch.stack([sample(1, seed=1), sample(1, seed=2)])
    with pytest.raises(ValueError, match="sample 1 needs image 2"):
        model(input_ids=rows, pixel_values=images(1))
    with pytest.raises(ValueError, match="holds 3 images"):
        model(input_ids=rows, pixel_values=images(3))
    ragged = rows.clone()
    ragged[1, 3] = 7
    with pytest.raises(ValueError, match="sample 1 has 3 <image> placeholder tokens"):
        model(input_ids=ragged, pixel_values=images(2))
    with pytest.raises(ValueError, match="sample 0 needs image 1"):
        model(input_ids=rows)


def test_generate_with_cache_equals_stepwise_greedy(model):
    ids = torch.stack([sample(1, seed=11), sample(1, seed=12)])
    px = images(2, seed=13)
    out = model.generate(input_ids=ids, pixel_values=px, attention_mask=torch.ones_like(ids), max_new_tokens=6, do_sample=False, use_cache=True, eos_token_id=None, pad_token_id=0)
    seq = ids
    for _ in range(6):
        logits = model(input_ids=seq, pixel_values=px, use_cache=False).logits
        seq = torch.cat([seq, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(out, seq)


def test_logits_to_keep(model):
    ids = sample(1, seed=3)[None]
    full = model(input_ids=ids, pixel_values=images(1)).logits
    last = model(input_ids=ids, pixel_values=images(1), logits_to_keep=1).logits
    assert last.shape[1] == 1
    torch.testing.assert_close(last[:, 0], full[:, -1])


def test_save_load_bit_identical_and_auto(tmp_path, model):
    from transformers import AutoConfig, AutoModel, AutoModelForImageTextToText

    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    ids, px = sample(1, seed=2)[None], images(1)
    ref = model(input_ids=ids, pixel_values=px).logits
    for loader in (MedRegAForConditionalGeneration, AutoModelForImageTextToText, AutoModel):
        back = loader.from_pretrained(tmp_path).eval()
        assert isinstance(back, MedRegAForConditionalGeneration)
        assert torch.equal(back(input_ids=ids, pixel_values=px).logits, ref)
    assert AutoConfig.from_pretrained(tmp_path).num_image_tokens == N_TOK


def test_packed_row_equals_separate(model):
    a, b = sample(1, text=5, seed=21), sample(0, text=9, seed=22)
    packed = torch.cat([a, b])[None]
    pos = torch.cat([torch.arange(len(a)), torch.arange(len(b))])[None]
    px = images(1, seed=23)
    out = model(input_ids=packed, pixel_values=px, position_ids=pos, use_cache=False).logits[0]
    sep_a = model(input_ids=a[None], pixel_values=px).logits[0]
    sep_b = model(input_ids=b[None]).logits[0]
    torch.testing.assert_close(out, torch.cat([sep_a, sep_b]), atol=1e-5, rtol=1e-5)
    # summed token losses: the packed row (boundary label masked) equals the two samples apart
    lab_a, lab_b = a.clone(), b.clone()
    lab_a[:8] = -100
    lab_b[0] = -100
    packed_loss = model(input_ids=packed, pixel_values=px, position_ids=pos, labels=torch.cat([lab_a, lab_b])[None], num_items_in_batch=1).loss
    loss_a = model(input_ids=a[None], pixel_values=px, labels=lab_a[None], num_items_in_batch=1).loss
    loss_b = model(input_ids=b[None], labels=lab_b[None], num_items_in_batch=1).loss
    torch.testing.assert_close(packed_loss, loss_a + loss_b, atol=1e-4, rtol=1e-5)


def test_pixel_shuffle_projector_and_tiling():
    m = make_model(pixel_shuffle=0.5, patch_size=8)
    assert m.config.num_image_tokens == 4
    ids = torch.cat([torch.full((4,), IMG), torch.arange(3, 9)])[None]
    assert m(input_ids=ids, pixel_values=images(1)).logits.shape == (1, 10, VOCAB)
    plan = plan_tiles((1000, 500), tile_size=448, max_tiles=6, use_thumbnail=True)
    assert plan.grid == (2, 1) and plan.num_tiles == 3 and plan.has_thumbnail
    assert plan.boxes == [(0, 0, 500, 500), (500, 0, 1000, 500), (0, 0, 1000, 500)]
    assert plan_tiles((300, 300), 448, max_tiles=0).boxes == [(0, 0, 300, 300)]
    tall = plan_tiles((200, 900), 224, max_tiles=12, use_thumbnail=False)
    assert tall.grid == (1, 5) and not tall.has_thumbnail and tall.boxes[-1] == (0, 720, 200, 900)


def test_stages_and_lora_keep_region_rows_trainable():
    region = [290, 291, 292]
    m = make_model(region_token_ids=region)
    total = sum(p.numel() for p in m.parameters())
    align = m.set_trainable("alignment")
    assert align["trainable"] == align["projector"] > 0 and align["vision"] == align["language"] == 0
    inst = m.set_trainable("instruction")
    assert inst["vision"] == 0 and inst["language"] > 0
    assert m.set_trainable("full")["trainable"] == total
    with pytest.raises(ValueError, match="unknown training stage"):
        m.set_trainable("pretrain")
    m.set_trainable("instruction")
    summary = m.apply_lora(r=2, alpha=4)
    assert 0 < summary["language"] < inst["language"]
    names = [n for n, p in m.named_parameters() if p.requires_grad]
    assert any("trainable_tokens_delta" in n for n in names) and any("lora_A" in n for n in names)
    assert not any(n.endswith("embed_tokens.weight") and "delta" not in n for n in names)
    ids = torch.cat([sample(1, seed=31), torch.tensor(region)])[None]
    labels = ids.clone()
    m.train()
    m(input_ids=ids, pixel_values=images(1), labels=labels).loss.backward()
    delta = next(p for n, p in m.named_parameters() if "embed_tokens" in n and "trainable_tokens_delta" in n)
    assert delta.shape[0] == len(region) and delta.grad.abs().sum() > 0
    with torch.no_grad():
        for n, p in m.named_parameters():
            if "lora_B" in n or "trainable_tokens_delta" in n:
                p.add_(0.05)
    m.eval()
    before = m(input_ids=ids, pixel_values=images(1)).logits
    m.merge_lora()
    assert not any("lora" in n or "delta" in n for n, _ in m.named_parameters())
    torch.testing.assert_close(m(input_ids=ids, pixel_values=images(1)).logits, before, atol=1e-5, rtol=1e-4)


def test_identical_images_are_encoded_once_when_the_tower_is_frozen():
    m = make_model(seed=3).train()
    a, b = sample(2, seed=31), sample(1, seed=32)
    ids = torch.stack([a, torch.cat([b, torch.full((len(a) - len(b),), 5)])])
    px = images(2, seed=33)
    px = torch.cat([px, px[:1]])  # sample 2 shows sample 1's first image again
    seen = []
    m.vision_tower.register_forward_hook(lambda mod, args, out: seen.append(args[0].shape[0]))

    def step():
        m.zero_grad()
        out = m(input_ids=ids, pixel_values=px, labels=ids)
        out.loss.backward()
        return out, {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None}

    m.set_trainable("instruction")  # frozen tower
    out, grads = step()
    assert seen == [2]  # three images, two distinct
    m._encode_images = lambda pixels: m.get_image_features(pixels).pooler_output  # every image encoded
    ref, ref_grads = step()
    assert seen == [2, 3]
    torch.testing.assert_close(out.image_hidden_states, ref.image_hidden_states, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(out.loss, ref.loss)
    assert grads.keys() == ref_grads.keys() and grads
    for name, grad in grads.items():
        torch.testing.assert_close(grad, ref_grads[name], atol=1e-6, rtol=1e-5, msg=name)
    del m._encode_images
    m.set_trainable("full")  # a trainable tower in training mode sees every image
    step()
    assert seen == [2, 3, 3]
