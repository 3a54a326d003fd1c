import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image

from fcnlib import class_table
from fcnlib.receptive import receptive_field
from fcnlib.viz import colourise, image_to_hwc, overlay, smallest_text_px, unit_extent

CAMVID = class_table("camvid")
VOC = class_table("voc")


def test_camvid_table_matches_segnet():
    assert CAMVID.num_classes == 11 and CAMVID.ignore_index == 11
    assert CAMVID.classes[0] == "Sky" and CAMVID.classes[-1] == "Bicyclist"
    assert CAMVID.colours[4] == (60, 40, 222)  # Pavement


def test_voc_palette_equals_the_one_in_a_real_voc_label(voc_sample_root):
    label = Image.open(voc_sample_root / "label.png")
    assert label.mode == "P"
    embedded = np.array(label.getpalette()[: 256 * 3], dtype=np.uint8).reshape(-1, 3)
    ours = VOC.palette()
    for value in [*range(VOC.num_classes), VOC.ignore_index]:
        assert tuple(ours[value]) == tuple(embedded[value]), value


def test_unknown_dataset_is_named():
    with pytest.raises(ValueError, match=r"'cityscapes'.*known: \['camvid', 'voc'\]"):
        class_table("cityscapes")


@settings(max_examples=25, deadline=None)
@given(
    labels=arrays(
        np.uint8, st.tuples(st.integers(1, 9), st.integers(1, 9)), elements=st.integers(0, 11)
    )
)
def test_colourise_looks_up_each_pixel(labels):
    rgb = colourise(torch.from_numpy(labels.astype(np.int64)), CAMVID)
    assert rgb.shape == (*labels.shape, 3) and rgb.dtype == np.uint8
    for (i, j), value in np.ndenumerate(labels):
        expected = CAMVID.ignore_colour if value == 11 else CAMVID.colours[value]
        assert tuple(rgb[i, j]) == expected


def test_overlay_blends_labelled_pixels_and_keeps_void_ones():
    image = torch.full((3, 2, 2), 100, dtype=torch.uint8)
    mask = torch.tensor([[0, 11], [3, 11]])
    blended = overlay(image, mask, CAMVID, alpha=0.5)
    assert tuple(blended[0, 0]) == (114, 114, 114)  # halfway between 100 and Sky's 128
    assert tuple(blended[1, 0]) == (114, 82, 114)  # halfway to Road (128, 64, 128)
    assert tuple(blended[0, 1]) == tuple(blended[1, 1]) == (100, 100, 100)


def test_shape_errors_are_explained():
    with pytest.raises(ValueError, match="sizes differ"):
        overlay(
            torch.zeros(3, 4, 4, dtype=torch.uint8), torch.zeros(4, 5, dtype=torch.long), CAMVID
        )
    with pytest.raises(ValueError, match=r"must be \(H, W\)"):
        colourise(np.zeros((1, 4, 4), dtype=np.int64), CAMVID)
    with pytest.raises(ValueError, match="must be uint8"):
        image_to_hwc(np.zeros((4, 4, 3), dtype=np.float32))


def test_label_panels_draw_every_picture_and_a_legend_readable_in_the_book():
    import matplotlib.pyplot as plt

    from fcnlib.viz import label_panels

    table = class_table("camvid")
    mask = torch.randint(0, table.num_classes, (36, 48))
    image = torch.randint(0, 256, (3, 36, 48), dtype=torch.uint8)
    fig = label_panels(
        [image, colourise(mask, table), colourise(mask, table)], ["a", "b", "c"], table, columns=2
    )
    images = [ax for ax in fig.axes if ax.images]
    assert len(images) == 3 and len(fig.axes) == 4  # the fourth cell stays empty
    (legend,) = fig.legends
    assert [text.get_text() for text in legend.get_texts()] == list(table.classes)
    assert smallest_text_px(fig) >= 10  # across the book's column
    plt.close(fig)


@pytest.mark.parametrize("model", ["fcn32s", "fcn8s", "fcn8s-atonce"])
def test_fusion_diagram_has_a_box_per_step_straight_arrows_and_readable_text(model):
    import matplotlib.pyplot as plt
    from matplotlib.text import Annotation

    from fcnlib import models
    from fcnlib.viz import fusion_diagram, fusion_layout

    with torch.device("meta"):
        steps = models.build(model, 21).fusion_trace(torch.empty(1, 3, 500, 500))
    where = fusion_layout(steps)
    assert set(where) == {step.name for step in steps}
    assert len(set(where.values())) == len(steps)  # no two boxes in one place
    fig = fusion_diagram(steps)
    (ax,) = fig.axes
    arrows = [text for text in ax.texts if isinstance(text, Annotation)]
    assert len(arrows) == sum(len(step.inputs) for step in steps)
    for arrow in arrows:
        (x0, y0), (x1, y1) = arrow.xyann, arrow.xy
        assert x0 == x1 or y0 == y1, "every arrow is horizontal or vertical"
    labels = [text.get_text().split("\n")[0] for text in ax.texts if text.get_text()]
    assert labels == [step.name for step in steps]
    assert smallest_text_px(fig) >= 10
    plt.close(fig)


def test_units_are_drawn_on_the_cells_around_their_centres():
    # Two stride-2 3x3 convolutions without padding: r = 7, S = 4, P = 0, so unit (i, j) is
    # centred on pixel (3 + 4i, 3 + 4j) and drawn from 1 + 4i to 5 + 4i.
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 1, 3, 2), torch.nn.Conv2d(1, 1, 3, 2))
    left, right, bottom, top = unit_extent(receptive_field(net), rows=2, cols=3)
    assert (left, right, bottom, top) == (1.0, 13.0, 9.0, 1.0)
