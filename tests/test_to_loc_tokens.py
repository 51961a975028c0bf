"""``medrega.converters.to_loc_tokens``: a text-box model directory (a converted MedRegA) moved onto loc tokens:
tokenizer, embeddings and head grown, the new rows initialised as asked, the processor on the loc codec, the
rest kept; records render with loc tokens unchanged."""

import numpy as np
import pytest
import torch
from test_convert_internvl_chat import SIDE, chat_tokenizer, save_internvl_chat  # noqa: F401  (a fixture)

import medrega
from medrega import presets
from medrega.cli import main
from medrega.converters import ConversionError, to_loc_tokens
from medrega.converters.to_loc_tokens import INITS, loc_digit_strings
from medrega.data import Record, Turn
from medrega.grounding import LocTokenCodec

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def medrega_dir(tmp_path, chat_tokenizer):  # noqa: F811
    """A converted MedRegA (InternVL-Chat) directory: text boxes on 0..999, its tokenizer without loc tokens."""
    src, dst = tmp_path / "internvl_chat", tmp_path / "medrega"
    save_internvl_chat(src, chat_tokenizer, ps_version="v1")
    medrega.convert(src, dst)
    return dst


def test_medrega_checkpoint_moves_onto_loc_tokens(tmp_path, medrega_dir):
    src = medrega.Assistant.from_pretrained(medrega_dir)
    assert src.prompt_profile.name == "medrega"  # the internvl_chat converter sets MedRegA's prompts
    old = len(src.processor.tokenizer)
    dst = to_loc_tokens(medrega_dir, tmp_path / "loc", init="digits")
    loc = medrega.Assistant.from_pretrained(dst, max_new_tokens=4)
    tok = loc.processor.tokenizer
    assert isinstance(loc.codec, LocTokenCodec) and loc.model.config.region_codec["type"] == "loc"
    assert len(tok) >= old + 1000 and loc.model.config.text_config.vocab_size == len(tok)
    assert loc.model.get_input_embeddings().weight.shape[0] == len(tok) == loc.model.get_output_embeddings().weight.shape[0]
    loc_ids = tok.convert_tokens_to_ids([f"<loc_{k}>" for k in range(1000)])
    assert set(loc_ids) <= set(loc.model.config.region_token_ids)
    # MedRegA's conventions are kept: image token and wrapper, Hermes-2, the prompt profile
    assert loc.processor.image_token == "<IMG_CONTEXT>" and loc.processor.image_wrapper == ["<img>", "</img>"]
    assert loc.processor.chat_template == src.processor.chat_template and loc.prompt_profile.name == "medrega"

    # old rows untouched: the same logits over the old vocabulary
    ids = torch.tensor([[1, 5, 9, 12, 30, 7]])
    with torch.no_grad():
        before, after = src.model(input_ids=ids).logits, loc.model(input_ids=ids).logits
    torch.testing.assert_close(after[..., :old], before, atol=1e-5, rtol=1e-5)

    # "digits": <loc_k> starts at the mean of the rows of the text codec's decimal string for bin k
    emb, head = src.model.get_input_embeddings().weight, src.model.get_output_embeddings().weight
    for k in (0, 421, 999):
        digits = src.processor.tokenizer(loc_digit_strings(1000, 999)[k], add_special_tokens=False)["input_ids"]
        torch.testing.assert_close(loc.model.get_input_embeddings().weight[loc_ids[k]], emb[digits].mean(0))
        torch.testing.assert_close(loc.model.get_output_embeddings().weight[loc_ids[k]], head[digits].mean(0))

    image = np.random.default_rng(0).integers(0, 255, (40, 30, 3), dtype=np.uint8)
    result = loc.detect(image, "left lung")
    assert isinstance(result.text, str)


def test_digit_strings_are_the_text_codec_values_of_the_bin_centres():
    strings = loc_digit_strings(1000, 999)
    assert strings[0] == "0" and strings[421] == "421" and strings[999] == "999" and len(strings) == 1000
    assert loc_digit_strings(4, 1000) == ["125", "375", "625", "875"]


@pytest.fixture(scope="module")
def tiny_text_dir(tmp_path_factory):
    """The tiny preset on MedRegA's text codec, saved (its tokenizer already holds loc tokens: no resize)."""
    model, processor = presets.build("tiny", region_codec={"type": "text", "scale": 999}, hidden_size=32, num_hidden_layers=1)
    path = tmp_path_factory.mktemp("tiny") / "text"
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


@pytest.mark.parametrize("init", INITS)
def test_inits(tmp_path, tiny_text_dir, init):
    src = medrega.Assistant.from_pretrained(tiny_text_dir)
    loc = medrega.Assistant.from_pretrained(to_loc_tokens(tiny_text_dir, tmp_path / init, init=init))
    tok = loc.processor.tokenizer
    loc_ids = tok.convert_tokens_to_ids([f"<loc_{k}>" for k in range(1000)])
    old_emb = src.model.get_input_embeddings().weight
    new = loc.model.get_input_embeddings().weight
    if init == "mean":
        torch.testing.assert_close(new[loc_ids], old_emb[: len(tok)].mean(0).expand(1000, -1))
    elif init == "ordinal":  # a smooth code: neighbouring bins closer than distant ones
        near, far = (new[loc_ids[10]] - new[loc_ids[11]]).norm(), (new[loc_ids[10]] - new[loc_ids[600]]).norm()
        assert near < far
    else:
        assert not torch.allclose(new[loc_ids[3]], new[loc_ids[700]])
    others = [i for i in range(len(tok)) if i not in set(loc_ids)]
    torch.testing.assert_close(new[others], old_emb[others])


def test_records_need_no_conversion_and_render_with_loc_tokens(tmp_path, tiny_text_dir):
    dst = to_loc_tokens(tiny_text_dir, tmp_path / "loc")
    record = Record(
        "r0", ["x.png"], [Turn("user", "<image>\nPlease locate <ref>left lung</ref>."), Turn("assistant", "<ref>left lung</ref><box>[[100, 200, 500, 700]]</box>")],
        image_sizes=[(64, 64)], box_scale=999,
    ).validate()
    image = np.zeros((64, 64, 3), dtype=np.uint8)
    text_proc, loc_proc = medrega.MedRegAProcessor.from_pretrained(tiny_text_dir), medrega.MedRegAProcessor.from_pretrained(dst)
    turns = record.conversation
    as_text = text_proc.tokenizer.decode(text_proc.encode_conversation(turns, [image], box_scale=999)["input_ids"])
    as_loc = loc_proc.tokenizer.decode(loc_proc.encode_conversation(turns, [image], box_scale=999)["input_ids"])
    assert "[[100, 200, 500, 700]]" in as_text and "<loc_" not in as_text
    expected = LocTokenCodec().format_box([(100 / 999 * 64, 200 / 999 * 64, 500 / 999 * 64, 700 / 999 * 64)], (64, 64))
    assert f"<ref>left lung</ref>{expected}" in as_loc and "[[" not in as_loc
    assert record.conversation[1].content.endswith("[[100, 200, 500, 700]]</box>")  # the record itself is unchanged


def test_refusals(tmp_path, tiny_text_dir):
    loc = to_loc_tokens(tiny_text_dir, tmp_path / "loc")
    with pytest.raises(ConversionError, match="not text boxes"):
        to_loc_tokens(loc, tmp_path / "again")
    with pytest.raises(ConversionError, match="init="):
        to_loc_tokens(tiny_text_dir, tmp_path / "bad", init="random")
    with pytest.raises(FileExistsError):
        to_loc_tokens(tiny_text_dir, loc)
    assert not (tmp_path / "bad").exists() and not (tmp_path / "again").exists()


def test_cli_to_loc_tokens(tmp_path, tiny_text_dir, capsys):
    assert main(["convert", str(tiny_text_dir), str(tmp_path / "cli"), "--to-loc-tokens", "--init", "digits"]) == 0
    assert str(tmp_path / "cli") in capsys.readouterr().out
    assert isinstance(medrega.MedRegAProcessor.from_pretrained(tmp_path / "cli").codec, LocTokenCodec)
