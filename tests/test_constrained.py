import pytest
import torch
from transformers import LogitsProcessor

from medrega.grounding import LocTokenCodec
from medrega.inference import BoxConstraintLogitsProcessor
from medrega.processing import MedRegAProcessor

BINS = 50


@pytest.fixture(scope="module")
def processor():
    from medrega.tokenization import train_bpe_tokenizer

    tok = train_bpe_tokenizer(["the left lung shows a nodule", "右肺上叶见结节，左肺未见异常。"] * 20, vocab_size=400)
    MedRegAProcessor.prepare_tokenizer(tok, LocTokenCodec(bins=BINS))
    return MedRegAProcessor(tokenizer=tok, image_size=32, num_image_tokens=4, region_codec={"type": "loc", "bins": BINS})


@pytest.fixture(scope="module")
def ids(processor):
    tok, codec = processor.tokenizer, processor.codec
    return {
        "box": tok.convert_tokens_to_ids("<box>"),
        "end": tok.convert_tokens_to_ids("</box>"),
        "loc": codec.loc_token_ids(tok),
        "img": tok.convert_tokens_to_ids(codec.image_tags()),
        "text": tok.convert_tokens_to_ids(tok.tokenize("the left lung")),
        "ref": tok.convert_tokens_to_ids(["<ref>", "</ref>"]),
    }


def _walk_scores(generator, seq, vocab, ids, region):
    """Random scores that favour region tokens and never open a <ref> (only boxes are under test)."""
    scores = torch.randn(seq.shape[0], vocab, generator=generator)
    scores[:, region] += 2.5
    scores[:, ids["ref"]] = float("-inf")
    return scores


def _closed_part(text: str) -> str:
    """The text up to the last </box>, or up to the first <box> when none closed: a box cut off by the
    length limit of the walk is not judged."""
    if "</box>" in text:
        return text[: text.rfind("</box>") + len("</box>")]
    return text.split("<box>")[0]


def _allowed(constraint, rows: list[list[int]], vocab: int) -> torch.Tensor:
    """(B, V) bool: tokens left finite after the constraint, rows padded on the left with text."""
    width = max(map(len, rows))
    input_ids = torch.tensor([[rows[0][0]] * (width - len(r)) + r for r in rows])
    return torch.isfinite(constraint(input_ids, torch.zeros(len(rows), vocab)))


def _loc_bins(allowed_row: torch.Tensor, loc_ids: list[int]) -> list[int]:
    return [k for k, i in enumerate(loc_ids) if allowed_row[i]]


def test_box_grammar_per_position_in_one_batch(processor, ids):
    c = BoxConstraintLogitsProcessor.from_processor(processor)
    vocab = len(processor.tokenizer)
    text, box, end, loc = ids["text"], ids["box"], ids["end"], ids["loc"]
    rows = [
        text,  # outside: untouched
        text + [box],  # x1
        text + [box, loc[5]],  # y1
        text + [box, loc[5], loc[7]],  # x2 > 5
        text + [box, loc[5], loc[7], loc[9]],  # y2 > 7
        text + [box, loc[5], loc[7], loc[9], loc[8]],  # a new box or </box>
        text + [box, loc[1], loc[2], loc[3], loc[4], end],  # closed: untouched
    ]
    allowed = _allowed(c, rows, vocab)
    assert allowed[0].all() and allowed[6].all()
    assert _loc_bins(allowed[1], loc) == list(range(BINS - 1)) and allowed[1].sum() == BINS - 1
    assert _loc_bins(allowed[2], loc) == list(range(BINS - 1)) and not allowed[2, end]
    assert _loc_bins(allowed[3], loc) == list(range(6, BINS)) and allowed[3].sum() == BINS - 6
    assert _loc_bins(allowed[4], loc) == list(range(8, BINS)) and not allowed[4, end]
    assert _loc_bins(allowed[5], loc) == list(range(BINS - 1)) and allowed[5, end]
    assert allowed[5].sum() == BINS  # locs 0..bins-2 and </box>, nothing else


def test_multi_image_boxes_start_with_a_tag_of_an_existing_image(processor, ids):
    c = BoxConstraintLogitsProcessor.from_processor(processor, n_images=[3, 1])
    rows = [ids["text"] + [ids["box"]], ids["text"] + [ids["box"]]]
    allowed = _allowed(c, rows, len(processor.tokenizer))
    assert allowed[0].nonzero().flatten().tolist() == ids["img"][:3]
    assert not allowed[1, ids["img"]].any() and allowed[1, ids["loc"][0]]
    after_tag = _allowed(c, [ids["text"] + [ids["box"], ids["img"][1]]] * 2, len(processor.tokenizer))
    assert _loc_bins(after_tag[0], ids["loc"]) == list(range(BINS - 1))


def test_length_budget_and_box_limit_close_boxes(processor, ids):
    loc, box, end, text = ids["loc"], ids["box"], ids["end"], ids["text"]
    group = [box, loc[1], loc[2], loc[3], loc[4]]
    vocab = len(processor.tokenizer)
    tight = BoxConstraintLogitsProcessor.from_processor(processor, max_length=len(text + group) + 3)
    assert _allowed(tight, [text + group], vocab)[0].nonzero().flatten().tolist() == [end]
    no_room = BoxConstraintLogitsProcessor.from_processor(processor, max_length=len(text) + 5)
    allowed = _allowed(no_room, [text], vocab)[0]
    assert not allowed[box] and allowed[text[0]]
    one_box = BoxConstraintLogitsProcessor.from_processor(processor, max_boxes=1)
    assert _allowed(one_box, [text + group], vocab)[0].nonzero().flatten().tolist() == [end]


def test_random_walk_writes_only_well_formed_boxes(processor, ids):
    """Greedy decoding of random, region-biased scores: every box parses, with and without image tags."""
    vocab = len(processor.tokenizer)
    region = torch.tensor([ids["box"], ids["end"], *ids["loc"], *ids["img"]])
    for n_images in (1, 2):
        generator = torch.Generator().manual_seed(n_images)
        c = BoxConstraintLogitsProcessor.from_processor(processor, n_images=n_images)
        seq = torch.tensor([ids["text"]] * 6)
        for _ in range(120):
            scores = _walk_scores(generator, seq, vocab, ids, region)
            seq = torch.cat([seq, c(seq, scores).argmax(-1, keepdim=True)], 1)
        sizes = [(300, 200)] * n_images
        texts = processor.tokenizer.batch_decode(seq[:, len(ids["text"]) :], skip_special_tokens=True)
        found = 0
        for text in texts:
            parsed = processor.codec.parse(_closed_part(text), sizes)
            assert parsed.problems == [], parsed.problems
            found += sum(len(g.boxes) for g in parsed)
        assert found >= 10


def test_without_the_constraint_the_same_walk_breaks_boxes(processor, ids):
    vocab = len(processor.tokenizer)
    generator = torch.Generator().manual_seed(1)
    seq = torch.tensor([ids["text"]] * 6)
    region = torch.tensor([ids["box"], ids["end"], *ids["loc"]])
    for _ in range(120):
        seq = torch.cat([seq, _walk_scores(generator, seq, vocab, ids, region).argmax(-1, keepdim=True)], 1)
    texts = processor.tokenizer.batch_decode(seq, skip_special_tokens=True)
    assert any(processor.codec.parse(_closed_part(t), (300, 200)).problems for t in texts)


class _RegionBias(LogitsProcessor):
    """Make a random model write region tokens often."""

    def __init__(self, box: int, end: int, locs: list[int]):
        self.box, self.end, self.locs = box, end, torch.tensor(locs)

    def __call__(self, input_ids, scores):
        scores = scores.clone()
        scores[:, [self.box, self.end]] += 12
        scores[:, self.locs] += 6
        return scores


@pytest.fixture(scope="module")
def tiny():
    from medrega import presets

    return presets.build("tiny", seed=0)


def test_tiny_model_generates_parseable_boxes_only_with_the_constraint(tiny):
    from PIL import Image

    from medrega.inference import Assistant

    model, processor = tiny
    tok, codec = processor.tokenizer, processor.codec
    bias = _RegionBias(tok.convert_tokens_to_ids("<box>"), tok.convert_tokens_to_ids("</box>"), codec.loc_token_ids(tok))
    images = [Image.new("L", (160, 120), 90), Image.new("L", (90, 200), 30)]
    counts = {}
    for constrained in (True, False):
        torch.manual_seed(0)
        assistant = Assistant(model, processor, max_new_tokens=40, do_sample=True, logits_processor=[bias])
        results = assistant.detect_many(images, ["left lung", "heart"], progress=False, constrained=constrained)
        counts[constrained] = (sum(len(r.problems) for r in results), sum(len(b) for r in results for g in r.groundings for b in [g.boxes]))
        for r, im in zip(results, images):
            for g in r.groundings:
                for x1, y1, x2, y2 in g.boxes:
                    assert 0 <= x1 < x2 <= im.width and 0 <= y1 < y2 <= im.height
    assert counts[True][0] == 0 and counts[True][1] >= 4
    assert counts[False][0] > 0
