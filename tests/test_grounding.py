import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medrega.grounding import Grounding, GroundingParseError, LocTokenCodec, TextBoxCodec

CODECS = [LocTokenCodec(1000), TextBoxCodec(1000), TextBoxCodec(999)]
phrases = st.one_of(
    st.sampled_from(["left lung", "right lung", "heart", "左肺", "胰腺癌", "肝脏 病灶", "nodule (2 cm)"]),
    st.text(st.characters(whitelist_categories=("Lu", "Ll", "Lo")), min_size=1, max_size=12),
)


@st.composite
def samples(draw):
    sizes = [(draw(st.integers(1, 10_000)), draw(st.integers(1, 10_000))) for _ in range(draw(st.integers(1, 3)))]
    groundings = []
    for _ in range(draw(st.integers(1, 3))):
        index = draw(st.integers(0, len(sizes) - 1))
        w, h = sizes[index]
        boxes = []
        for _ in range(draw(st.integers(1, 5))):
            xs = draw(st.tuples(st.floats(0, w), st.floats(0, w)).filter(lambda t: t[0] != t[1]).map(sorted))
            ys = draw(st.tuples(st.floats(0, h), st.floats(0, h)).filter(lambda t: t[0] != t[1]).map(sorted))
            boxes.append((xs[0], ys[0], xs[1], ys[1]))
        groundings.append(Grounding(draw(phrases), boxes, index))
    return sizes, groundings


def _bin_width(codec):
    return 1.0 / (codec.bins if isinstance(codec, LocTokenCodec) else codec.scale)


@pytest.mark.parametrize("codec", CODECS, ids=lambda c: f"{c.name}")
@settings(max_examples=150, deadline=None)
@given(sample=samples())
def test_round_trip_within_half_a_bin(codec, sample):
    sizes, groundings = sample
    image_size = sizes if len(sizes) > 1 else sizes[0]
    text = codec.format(groundings, image_size)
    parsed = codec.parse(text, image_size)
    assert parsed.problems == []
    assert len(parsed) == len(groundings)
    for got, want in zip(parsed, groundings):
        assert got.phrase == want.phrase.strip()
        assert got.image_index == want.image_index
        w, h = sizes[want.image_index]
        for gb, wb in zip(got.boxes, want.boxes, strict=True):
            assert gb[0] < gb[2] and gb[1] < gb[3]  # never a zero-area box
            for axis, (g, v, size) in enumerate(zip(gb, wb, (w, h, w, h))):
                thin = wb[axis % 2 + 2] - wb[axis % 2] < _bin_width(codec) * size  # may be widened to keep an area
                assert abs(g - v) <= (1.5 if thin else 0.5) * _bin_width(codec) * size + 1e-6 * size


@pytest.mark.parametrize("codec", CODECS, ids=lambda c: f"{c.name}")
@settings(max_examples=300, deadline=None)
@given(text=st.lists(st.sampled_from([*"<>/[],0123456789 abc肺", "<ref>", "</ref>", "<box>", "</box>", "<loc_5>", "<loc_999>", "<img_2>", "[["]), max_size=60).map("".join))
def test_garbage_never_raises(codec, text):
    result = codec.parse(text, [(100, 80), (30, 30)])
    assert isinstance(result.problems, list)
    codec.strip(text)


def test_loc_format_and_multi_box():
    codec = LocTokenCodec()
    text = codec.format([Grounding("left lung", [(12, 40, 300, 511), (600, 40, 900, 500)])], (1000, 1000))
    assert text == "<ref>left lung</ref><box><loc_12><loc_40><loc_300><loc_511><loc_600><loc_40><loc_900><loc_500></box>"


def test_multi_image_tag():
    codec = TextBoxCodec(1000)
    g = [Grounding("nodule", [(10, 10, 50, 50)], image_index=1)]
    text = codec.format(g, [(100, 100), (200, 200)])
    assert text == "<ref>nodule</ref><box><img_2>[[50, 50, 250, 250]]</box>"
    assert codec.parse(text, [(100, 100), (200, 200)])[0].image_index == 1
    bad = codec.parse(text, (100, 100))
    assert bad == [] and "image tag" in bad.problems[0]


def test_medrega_text_and_tag_stripped_forms():
    codec = TextBoxCodec(999)
    text = "<ref>胰腺癌</ref><box>[[661, 528, 743, 599]]</box>：胰尾部见一稍低密度肿块"
    (g,) = codec.parse(text, (512, 512))
    assert g.phrase == "胰腺癌"
    assert g.boxes[0] == pytest.approx((661 / 999 * 512, 528 / 999 * 512, 743 / 999 * 512, 599 / 999 * 512))
    assert codec.strip(text) == "胰腺癌：胰尾部见一稍低密度肿块"
    stripped = "胰腺癌[[690, 472, 735, 511]]：胰尾部见..."
    (g,) = codec.parse(stripped, (999, 999))
    assert g.phrase == "胰腺癌" and g.boxes == [(690, 472, 735, 511)]
    assert codec.strip(stripped) == "胰腺癌：胰尾部见..."


def test_two_refs_each_with_a_box():
    codec = TextBoxCodec(999)
    text = "<ref>right lung</ref><box>[[102, 106, 481, 910]]</box>, <ref>left lung</ref><box>[[535, 128, 923, 889]]</box>: No focal consolidation."
    parsed = codec.parse(text, (999, 999))
    assert [g.phrase for g in parsed] == ["right lung", "left lung"]
    assert codec.strip(text) == "right lung, left lung: No focal consolidation."


@pytest.mark.parametrize(
    "text, problem",
    [
        ("<ref>a</ref><box><loc_1><loc_2><loc_3></box>", "multiple of 4"),
        ("<ref>a</ref><box><loc_5><loc_6><loc_1><loc_2></box>", "reversed"),
        ("<ref>a</ref><box><loc_5><loc_6><loc_7>", "unclosed <box>"),
        ("<ref>a<box><loc_1><loc_2><loc_3><loc_4></box>", "unclosed <ref>"),
        ("<ref>a</ref><box><loc_1><loc_2><loc_3><loc_1000></box>", "outside 0..999"),
    ],
)
def test_malformed_reported_or_raised(text, problem):
    codec = LocTokenCodec()
    result = codec.parse(text, (100, 100))
    assert any(problem in p for p in result.problems), result.problems
    with pytest.raises(GroundingParseError, match=problem.split()[0]):
        codec.parse(text, (100, 100), strict=True)


def test_partial_keeps_good_boxes():
    codec = LocTokenCodec()
    result = codec.parse("<ref>a</ref><box><loc_1><loc_2><loc_30><loc_40><loc_9></box>", (1000, 1000))
    assert len(result) == 1 and result[0].boxes == [(1.5, 2.5, 30.5, 40.5)]
    assert result.problems


def test_tokenizer_gets_one_id_per_loc_token(tiny_tokenizer):
    codec = LocTokenCodec(bins=1000)
    added = codec.add_to_tokenizer(tiny_tokenizer)
    assert added.num_added == len(added.tokens) == 4 + 16 + 1000 + 1
    text = codec.format([Grounding("左肺", [(12, 40, 300, 511)])], (1000, 1000))
    ids = tiny_tokenizer(text, add_special_tokens=False)["input_ids"]
    loc_ids = [tiny_tokenizer.convert_tokens_to_ids(f"<loc_{v}>") for v in (12, 40, 300, 511)]
    assert all(i in ids for i in loc_ids)
    decoded = tiny_tokenizer.decode(ids, skip_special_tokens=True)
    assert codec.parse(decoded, (1000, 1000))[0].boxes == [pytest.approx((12.5, 40.5, 300.5, 511.5))]
    assert codec.parse(decoded, (1000, 1000))[0].phrase == "左肺"
    again = codec.add_to_tokenizer(tiny_tokenizer)
    assert again.num_added == 0 and again.ids == added.ids


def test_transcode_text_to_loc_keeps_prose_and_format_descriptions():
    text = 'Use "<ref>object</ref><box>[[x1, y1, x2, y2]]</box>". <ref>胰腺癌</ref><box>[[661, 528, 743, 599]]</box>：肿块'
    out = TextBoxCodec(999).transcode(text, (512, 512), LocTokenCodec(1000))
    assert out.startswith('Use "<ref>object</ref><box>[[x1, y1, x2, y2]]</box>". <ref>胰腺癌</ref><box><loc_')
    assert out.endswith("</box>：肿块")
    (g,) = LocTokenCodec(1000).parse(out, (512, 512))
    assert g.boxes[0] == pytest.approx((661 / 999 * 512, 528 / 999 * 512, 743 / 999 * 512, 599 / 999 * 512), abs=0.26)


def test_map_boxes_moves_one_images_boxes_and_writes_them_for_the_new_size():
    codec = TextBoxCodec(scale=1000)
    sizes = [(200, 100), (50, 50)]
    text = "<ref>a</ref><box><img_1>[[100, 100, 500, 500]]</box> and <ref>b</ref><box><img_2>[[0, 0, 500, 500]]</box>, format [[x1, y1, x2, y2]]"
    shifted = codec.map_boxes(text, sizes, lambda boxes, i: [(x1 - 10, y1, x2 - 10, y2) for x1, y1, x2, y2 in boxes] if i == 0 else None, output_size=[(100, 100), (50, 50)])
    assert shifted.endswith("<ref>b</ref><box><img_2>[[0, 0, 500, 500]]</box>, format [[x1, y1, x2, y2]]")
    (moved,) = codec.parse(shifted, [(100, 100), (50, 50)])[0].boxes
    assert moved == pytest.approx((10, 10, 90, 50))
    assert codec.map_boxes(text, sizes, lambda boxes, i: boxes, target=LocTokenCodec(bins=10)) == codec.transcode(text, sizes, LocTokenCodec(bins=10))
