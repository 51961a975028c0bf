import io

import numpy as np
import pytest
from PIL import Image, ImageDraw

from medrega.grounding import Grounding
from medrega.inference import Result, draw_groundings
from medrega.inference.draw import PALETTE, cjk_font_path, load_font, place_label


def _grey(w=200, h=120, level=40):
    return Image.new("RGB", (w, h), (level, level, level))


def test_box_edges_have_the_box_colour_and_inside_is_untouched():
    image = _grey()
    out = draw_groundings(image, [Grounding("", [(20, 30, 120, 100)])], min_size=0, line_width=2)
    px = np.asarray(out)
    colour = PALETTE[0]
    for x, y in [(20, 60), (21, 60), (119, 60), (118, 60), (70, 30), (70, 99)]:  # left, right, top, bottom edges
        assert tuple(px[y, x]) == colour, (x, y)
    assert tuple(px[60, 70]) == (40, 40, 40)  # inside
    assert tuple(px[60, 17]) == (40, 40, 40) and tuple(px[60, 122]) == (40, 40, 40)  # outside
    assert out.size == image.size


def test_scaling_keeps_boxes_on_the_same_anatomy():
    image = _grey(100, 50)
    out = draw_groundings(image, [Grounding("", [(10, 10, 50, 40)])], min_size=400, line_width=1)
    assert out.size == (400, 200)
    px = np.asarray(out)
    assert tuple(px[100, 40]) == PALETTE[0]  # x1 = 10 px * 4
    assert tuple(px[100, 199]) == PALETTE[0]  # x2 = 50 px * 4, last pixel inside


def test_each_phrase_its_colour_and_label():
    image = _grey(300, 300)
    out = np.asarray(draw_groundings(image, [Grounding("liver", [(10, 100, 100, 200)]), Grounding("spleen", [(150, 100, 290, 200)])], min_size=0))
    assert tuple(out[150, 10]) == PALETTE[0] and tuple(out[150, 150]) == PALETTE[1]
    label_area = out[60:100, 10:100]  # the tag above the first box
    assert (label_area == PALETTE[0]).all(-1).sum() > 100


def test_chinese_labels_render_distinct_glyphs():
    font = load_font(32)

    def render(text):
        canvas = Image.new("L", (80, 48), 0)
        ImageDraw.Draw(canvas).text((4, 4), text, fill=255, font=font)
        return np.asarray(canvas) > 127

    lung, liver, heart = render("肺"), render("肝"), render("心")
    assert lung.sum() > 40 and liver.sum() > 40 and heart.sum() > 10
    # a missing glyph draws the same box for every character
    assert (lung != liver).sum() > 40 and (lung != heart).sum() > 40
    assert cjk_font_path().lower().endswith((".otf", ".ttf", ".ttc"))


def test_one_panel_per_image_with_titles():
    images = [_grey(100, 80), _grey(60, 120, 90)]
    groundings = [Grounding("结节", [(5, 5, 50, 50)], image_index=1)]
    sheet = draw_groundings(images, groundings, min_size=0, gap=10)
    assert sheet.width == 100 + 10 + 60 and sheet.height > 120
    px = np.asarray(sheet)
    header = sheet.height - 120
    assert tuple(px[header + 25, 110 + 5]) == PALETTE[0]  # box drawn on the second panel
    assert not (px[header:, :100] == PALETTE[0]).all(-1).any()  # nothing on the first
    with pytest.raises(ValueError, match="image_index 1"):
        draw_groundings(images[:1], groundings)


def test_result_draws_itself_for_notebooks_and_serialises():
    result = Result("detection", "left lung", [Grounding("left lung", [(10, 10, 60, 50)])], [_grey()], raw_text="x", lang="en")
    png = result._repr_png_()
    assert png.startswith(b"\x89PNG")
    assert Image.open(io.BytesIO(png)).size == result.show(display=False).size
    data = result.to_dict()
    assert data["groundings"] == [{"phrase": "left lung", "boxes": [[10.0, 10.0, 60.0, 50.0]], "image_index": 0}]
    assert data["image_sizes"] == [[200, 120]]
    assert str(result) == "left lung"


def test_a_true_and_a_predicted_label_never_hide_each_other():
    first = place_label((40, 12), (10, 10, 60, 60), [], (100, 100))
    second = place_label((60, 12), (10, 10, 60, 60), [first], (100, 100))
    assert first[3] <= second[1] or second[3] <= first[1]  # stacked, not overlapping
    scan = Image.new("RGB", (64, 64), (128, 128, 128))
    box = [(8.0, 8.0, 40.0, 40.0)]

    def pixels(groundings, colour):
        return int((np.asarray(draw_groundings(scan, groundings, min_size=256)) == colour).all(-1).sum())

    named = [Grounding("true: nodule", box), Grounding("predicted: nodule", box)]
    unnamed = [Grounding("", box), Grounding(" ", box)]
    for k in range(2):  # each label's fill shows, beyond its box outline
        assert pixels(named, PALETTE[k]) - pixels(unnamed, PALETTE[k]) > 200
