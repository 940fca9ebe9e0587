import numpy as np
import pytest

from tf_frcnn.data.records import BoxAudit, DataError, DataWarning, read_image_rgb, read_image_size


@pytest.mark.parametrize("kind", ["rgb", "gray", "rgba", "palette", "palette_transparent", "cmyk"])
def test_every_colour_mode_decodes_to_rgb(tmp_path, image_writer, kind):
    path = tmp_path / f"image.{kind}"
    colour = image_writer(path, kind, size=(7, 5))
    image = read_image_rgb(path)
    assert image.dtype == np.uint8 and image.shape == (5, 7, 3)
    # JPEG (rgb, cmyk) is lossy; the PNG kinds must come back exactly.
    tolerance = 6 if kind in ("rgb", "cmyk") else 0
    np.testing.assert_allclose(image.reshape(-1, 3).mean(axis=0), colour, atol=tolerance)


@pytest.mark.parametrize("kind", ["corrupt", "truncated"])
def test_bad_image_raises_data_error_naming_the_file(tmp_path, image_writer, kind):
    path = tmp_path / f"bad_{kind}.jpg"
    image_writer(path, kind)
    with pytest.raises(DataError, match=f"bad_{kind}.jpg"):
        read_image_rgb(path)


def test_header_probe_reads_size_but_not_a_truncated_body(tmp_path, image_writer):
    image_writer(tmp_path / "t.jpg", "truncated", size=(40, 30))
    assert read_image_size(tmp_path / "t.jpg") == (30, 40)
    image_writer(tmp_path / "c.jpg", "corrupt")
    with pytest.raises(DataError, match="c.jpg"):
        read_image_size(tmp_path / "c.jpg")


def test_box_audit_clips_drops_and_warns_once():
    audit = BoxAudit("demo")
    boxes = [
        [0, 0, 10, 20],  # kept as is
        [-5, 10, 10, 50],  # clipped at the top and the right
        [5, 8, 5, 12],  # zero height: dropped
        [0, 15, 10, 5],  # xmin > xmax: dropped
        [12, 0, 20, 10],  # below the image: dropped
    ]
    normalised, keep = audit.clean(boxes, height=10, width=40)
    np.testing.assert_array_equal(keep, [True, True, False, False, False])
    np.testing.assert_allclose(normalised, [[0, 0, 1, 0.5], [0, 0.25, 1, 1]])
    assert normalised.dtype == np.float32
    audit.clean(np.zeros((0, 4)), height=10, width=40)
    with pytest.warns(DataWarning, match="dropped 3 boxes.*clipped 1 boxes") as caught:
        audit.warn()
    assert len(caught) == 1
