import numpy as np
import pytest
import tensorflow as tf

from tf_frcnn import ROIPooling, ROIPoolingBuiltin
from tf_frcnn import boxes as box_ops
from tf_frcnn.roi import sample_rois

GT = tf.constant([[[100.0, 100.0, 200.0, 220.0], [300.0, 300.0, 380.0, 340.0], [0, 0, 0, 0]]])
GT_LABELS = tf.constant([[2, 5, 0]])


def _proposals(n=2000, seed=0):
    """Random proposals around the two objects and elsewhere: plenty of
    foreground (IoU >= 0.5), background [0.1, 0.5) and below 0.1."""
    rng = np.random.default_rng(seed)
    centre = rng.choice([[150.0, 160.0], [340.0, 320.0], [500.0, 500.0]], size=n)
    centre = centre + rng.normal(scale=25.0, size=(n, 2))
    size = rng.uniform(40.0, 160.0, size=(n, 2))
    boxes = np.concatenate([centre - size / 2, centre + size / 2], axis=-1)
    return tf.constant(boxes[None], tf.float32), tf.constant([n])


def _summary(sampled):
    labels = sampled["labels"].numpy()[0]
    return (labels > 0).sum(), (labels == 0).sum(), (labels == -1).sum()


def test_paper_sampler_128_with_25_percent_foreground():
    proposals, count = _proposals()
    sampled = sample_rois(proposals, count, GT, GT_LABELS, seed=1)
    fg, bg, ignored = _summary(sampled)
    assert sampled["rois"].shape == (1, 128, 4)
    assert (fg, bg, ignored) == (32, 96, 0)
    overlaps = box_ops.iou(sampled["rois"][0], GT[0, :2]).numpy().max(axis=1)
    labels = sampled["labels"].numpy()[0]
    assert np.all(overlaps[labels > 0] >= 0.5)
    assert np.all((overlaps[labels == 0] >= 0.1) & (overlaps[labels == 0] < 0.5))
    assert set(labels[labels > 0]) <= {2, 5}


def test_seed_sampler_256_one_to_one_zero_padded():
    proposals, count = _proposals(n=300, seed=2)
    kwargs = dict(num_rois=256, fg_fraction=0.5, bg_iou_low=0.0, seed=1)
    sampled = sample_rois(proposals, count, GT, GT_LABELS, fill="zeros", **kwargs)
    fg, bg, ignored = _summary(sampled)
    # Background is capped at its own share (128) although more would fit: zero boxes fill.
    assert fg < 128 and bg == 128 and ignored == 128 - fg > 0
    padded = sampled["rois"].numpy()[0][sampled["labels"].numpy()[0] == -1]
    assert not np.any(padded)
    # The same candidates under "negatives" fill every slot with background: the modes differ.
    fg_n, bg_n, ignored_n = _summary(
        sample_rois(proposals, count, GT, GT_LABELS, fill="negatives", **kwargs)
    )
    assert (fg_n, bg_n, ignored_n) == (fg, 256 - fg, 0)


def test_top_iou_fill_takes_the_best_remaining_boxes():
    # IoU with the gt [100, 100, 200, 220]: 1, 0.6, 0.4, 0; the gt itself is a candidate (1).
    proposals = tf.constant(
        [[[100, 100, 200, 220], [100, 100, 200, 300], [100, 100, 200, 400], [500, 500, 600, 600]]],
        tf.float32,
    )

    def sample(num_rois, fill="top_iou"):
        sampled = sample_rois(
            proposals,
            tf.constant([4]),
            GT[:, :1],
            GT_LABELS[:, :1],
            num_rois=num_rois,
            fg_fraction=0.5,
            fg_iou=0.7,
            fill=fill,
            bg_iou_low=0.0,
            seed=0,
        )
        return sampled["rois"].numpy()[0], sampled["labels"].numpy()[0]

    # fg_iou 0.7: the proposal equal to the gt and the gt are the only foreground.
    rois, labels = sample(4)
    assert (labels > 0).sum() == 2
    # 3 foreground slots: the 2 exact boxes plus the best remaining candidate (IoU 0.6, below
    # fg_iou), labelled with its gt's class; the IoU-0.4 box stays background.
    rois, labels = sample(6)
    fg_rois = rois[labels > 0]
    assert len(fg_rois) == 3 and set(labels[labels > 0]) == {2}
    assert any(np.allclose(r, [100, 100, 200, 300]) for r in fg_rois)
    assert not any(np.allclose(r, [100, 100, 200, 400]) for r in fg_rois)
    # 4 slots: the IoU-0.4 box too; the IoU-0 box never becomes foreground.
    rois, labels = sample(8)
    fg_rois = rois[labels > 0]
    assert len(fg_rois) == 4 and any(np.allclose(r, [100, 100, 200, 400]) for r in fg_rois)
    assert not any(np.allclose(r, [500, 500, 600, 600]) for r in fg_rois)
    # Under "negatives" the IoU-0.6 box is neither foreground nor background (>= 0.5).
    rois, labels = sample(6, fill="negatives")
    assert (labels > 0).sum() == 2


def test_ground_truth_boxes_are_candidates_and_targets_decode_to_them():
    sampled = sample_rois(tf.zeros([1, 5, 4]), tf.constant([0]), GT, GT_LABELS, seed=0)
    labels = sampled["labels"].numpy()[0]
    assert (labels > 0).sum() == 2  # only the two gt boxes themselves
    stds = (0.1, 0.1, 0.2, 0.2)
    fg = labels > 0
    decoded = box_ops.decode(sampled["targets"][0][fg], sampled["rois"][0][fg], stds)
    gt_for = {2: GT[0, 0].numpy(), 5: GT[0, 1].numpy()}
    np.testing.assert_allclose(decoded.numpy(), [gt_for[c] for c in labels[fg]], atol=1e-3)


def test_unknown_fill_mode():
    with pytest.raises(ValueError, match="fill"):
        sample_rois(tf.zeros([1, 1, 4]), tf.constant([1]), GT, GT_LABELS, fill="bogus")


def test_builtin_pooling_equals_crop_and_resize():
    rng = np.random.default_rng(0)
    feature_map = tf.constant(rng.normal(size=(2, 19, 27, 8)), tf.float32)
    corners = rng.uniform(-40, 460, size=(2, 30, 2, 2))
    rois = np.concatenate([corners.min(axis=2), corners.max(axis=2)], axis=-1)
    rois[0, 0] = [0, 0, 304, 432]  # the whole map
    rois[1, 1] = [-100, -100, -40, -40]  # more than two cells outside: zeros
    rois = tf.constant(rois, tf.float32)
    reference = ROIPooling(pool_size=7, stride=16)(feature_map, rois)
    twin = ROIPoolingBuiltin(pool_size=7, stride=16)(feature_map, rois)
    assert reference.shape == twin.shape == (60, 7, 7, 8)
    np.testing.assert_allclose(twin.numpy(), reference.numpy(), atol=1e-4)
    assert not np.any(twin.numpy()[31])


def test_pooling_projects_rois_by_the_stride():
    # A feature map whose value is its column index: pooling a box over
    # columns 2..5 (pixels (2 + .5) * 16 .. (5 + .5) * 16) sees columns 2..5 only.
    columns = tf.tile(tf.range(10, dtype=tf.float32)[None, None, :, None], [1, 6, 1, 1])
    rois = tf.constant([[[8.0, 40.0, 72.0, 88.0]]])
    pooled = ROIPooling(pool_size=2, stride=16)(columns, rois).numpy()[0, :, :, 0]
    assert pooled.min() >= 2.0 - 1e-5 and pooled.max() <= 5.0 + 1e-5
    np.testing.assert_allclose(pooled[:, -1], 5.0, atol=1e-5)


@pytest.mark.parametrize(
    "border, backbone",
    [
        # A box clipped to the bottom/right border of an image of 16 h - 8 pixels ends on the
        # centre of the map's last cell, h - 1: backbones with 'same' convolutions (h = ceil(H
        # / 16)) at the paper's 600 px (38 cells, the border at 37.0).
        (lambda h: 16 * h - 8, "same"),
        # ... one cell further, at h: VGG16's 'valid' max pools (h = floor(H / 16)) at 600 px
        # (37 cells, the border at 37.0).
        (lambda h: 16 * h + 8, "valid"),
    ],
)
def test_builtin_pooling_equals_crop_and_resize_on_rois_ending_at_the_border(border, backbone):
    """The border bug of the TFLite export: at a sample that lies exactly on the map's edge,
    crop_and_resize and the twin's arithmetic round the coordinate differently, so where the
    pooling turned to its zero extrapolation there, one returned the edge cell and the other 0
    (features 0.1-1 apart by up to 0.67, 4 to 38 ROIs of 200 per map size). Now neither side
    of a box inside the image can reach a jump."""
    rng = np.random.default_rng(0)
    for h in (4, 9, 13, 38):
        feature_map = tf.constant(rng.uniform(0.1, 1.0, (1, h, h + 3, 4)), tf.float32)
        far = float(border(h))
        near = rng.uniform(0.0, far - 20.0, (200, 2))
        rois = np.stack(
            [near[:, 0], near[:, 1], np.full(200, far), np.full(200, far + 48.0)], axis=-1
        )
        rois = tf.constant(rois[None], tf.float32)
        reference = ROIPooling(pool_size=7, stride=16)(feature_map, rois).numpy()
        twin = ROIPoolingBuiltin(pool_size=7, stride=16)(feature_map, rois).numpy()
        np.testing.assert_allclose(twin, reference, atol=1e-4, err_msg=f"h={h} ({backbone})")


def test_pooling_clamps_the_images_last_half_cell_to_the_edge():
    """A box touching the bottom/right border of an image that fills the map ends half a cell
    past the last cell's centre (pixel 16 h is feature coordinate h - 0.5): the image's own last
    pixels, which pool the edge cell's value (RoIAlign's rule, as ``MultiLevelRoIAlign``), not
    zero."""
    rows = tf.tile(tf.range(1.0, 7.0)[None, :, None, None], [1, 1, 6, 1])  # row i holds i + 1
    rois = tf.constant([[[56.0, 0.0, 96.0, 96.0]]])  # rows 3..5.5: the last bin sees row 5
    for layer in (ROIPooling, ROIPoolingBuiltin):
        pooled = layer(pool_size=2, stride=16)(rows, rois).numpy()[0, :, :, 0]
        np.testing.assert_allclose(pooled[-1], 6.0, atol=1e-5, err_msg=layer.__name__)


# IoU with the gt [100, 100, 200, 220]: 1, 0.6, 0.4, 0.067, 0.
BANDS = tf.constant(
    [
        [
            [100, 100, 200, 220],
            [100, 100, 200, 300],
            [100, 100, 200, 400],
            [100, 200, 200, 400],
            [500, 500, 600, 600],
            [100, 100, 200, 220],  # padding past num_proposals: never a candidate
        ]
    ],
    tf.float32,
)


def _bands(seed=0, **kwargs):
    kwargs = {"num_rois": 10, "fg_fraction": 0.5, **kwargs}
    sampled = sample_rois(BANDS, tf.constant([5]), GT[:, :1], GT_LABELS[:, :1], seed=seed, **kwargs)
    rois, labels = sampled["rois"].numpy()[0], sampled["labels"].numpy()[0]
    # Foreground first, then background, then the unfilled slots (zero boxes).
    assert list(labels) == sorted(labels, key=lambda label: (label <= 0, label < 0))
    assert not np.any(rois[labels < 0])
    fg = sorted(tuple(r) for r in rois[labels > 0].astype(int).tolist())
    bg = sorted(tuple(r) for r in rois[labels == 0].astype(int).tolist())
    return fg, bg, sampled


def test_iou_bands_of_the_roi_sampler_are_the_arguments():
    exact, p06, p04 = (100, 100, 200, 220), (100, 100, 200, 300), (100, 100, 200, 400)
    p007, far = (100, 200, 200, 400), (500, 500, 600, 600)
    # Defaults: foreground IoU >= 0.5 (the proposal, the gt itself, 0.6); background [0.1, 0.5).
    fg, bg, _ = _bands()
    assert fg == [exact, exact, p06] and bg == [p04]
    fg, bg, _ = _bands(fg_iou=0.7)  # 0.6 is neither (>= bg_iou_high)
    assert fg == [exact, exact] and bg == [p04]
    fg, bg, _ = _bands(fg_iou=0.7, bg_iou_high=0.7)
    assert fg == [exact, exact] and bg == sorted([p04, p06])
    fg, bg, _ = _bands(fg_iou=0.7, bg_iou_low=0.0)
    assert fg == [exact, exact] and bg == sorted([p04, p007, far])
    fg, bg, _ = _bands(bg_iou_low=0.05, bg_iou_high=0.3)
    assert fg == [exact, exact, p06] and bg == [p007]
    # An IoU exactly at fg_iou is foreground: 0.6 with fg_iou 0.6.
    fg, bg, _ = _bands(fg_iou=0.6)
    assert fg == [exact, exact, p06]


def test_foreground_cap_is_the_rounded_fraction_and_the_subset_moves_with_the_seed():
    # 3 foreground candidates; 10 ROIs at 0.25 -> round(2.5) = 2 foreground slots, at 0.15 -> 2
    # (1.5), at 0.1 -> 1, at 0.34 -> 3.
    for fraction, expected in ((0.25, 2), (0.15, 2), (0.1, 1), (0.34, 3)):
        fg, _, _ = _bands(fg_fraction=fraction)
        assert len(fg) == expected, fraction
    picks = {tuple(_bands(seed=tf.constant([s, 0]), fg_fraction=0.1)[0]) for s in range(12)}
    assert len(picks) >= 2  # not always the same foreground box
    first = _bands(seed=tf.constant([3, 0]), fg_fraction=0.1)[2]
    again = _bands(seed=tf.constant([3, 0]), fg_fraction=0.1)[2]
    for key in ("rois", "labels", "targets"):
        np.testing.assert_array_equal(first[key], again[key])


def test_roi_targets_use_the_given_stds_and_carry_no_gradient():
    proposals = tf.Variable(BANDS)
    with tf.GradientTape() as tape:
        sampled = sample_rois(
            proposals,
            tf.constant([5]),
            GT[:, :1],
            GT_LABELS[:, :1],
            num_rois=10,
            fg_fraction=0.5,
            box_stds=(1.0, 1.0, 1.0, 1.0),
            seed=0,
        )
        total = tf.reduce_sum(sampled["rois"]) + tf.reduce_sum(sampled["targets"])
    assert tape.gradient(total, proposals) is None
    labels = sampled["labels"].numpy()[0]
    fg = labels > 0
    expected = box_ops.encode(tf.repeat(GT[0, :1], int(fg.sum()), 0), sampled["rois"][0][fg])
    np.testing.assert_allclose(sampled["targets"][0][fg].numpy(), expected.numpy(), atol=1e-6)
    assert np.any(expected.numpy()) and set(labels[fg]) == {2}
    # By default the targets are divided by the detector's stds (0.1, 0.1, 0.2, 0.2).
    default = sample_rois(
        BANDS, tf.constant([5]), GT[:, :1], GT_LABELS[:, :1], num_rois=10, fg_fraction=0.5, seed=0
    )
    fg = default["labels"].numpy()[0] > 0
    expected = box_ops.encode(
        tf.repeat(GT[0, :1], int(fg.sum()), 0), default["rois"][0][fg], (0.1, 0.1, 0.2, 0.2)
    )
    np.testing.assert_allclose(default["targets"][0][fg].numpy(), expected.numpy(), atol=1e-5)
    assert np.abs(expected.numpy()).max() > 1.0
    assert not np.any(sampled["targets"][0][~fg].numpy())


def test_sampler_with_an_unknown_proposal_count_pads_to_the_slots():
    @tf.function(input_signature=[tf.TensorSpec([None, None, 4]), tf.TensorSpec([None], tf.int32)])
    def sample(proposals, count):
        return sample_rois(
            proposals, count, GT[:, :1], GT_LABELS[:, :1], num_rois=10, fg_fraction=0.5, seed=0
        )

    sampled = sample(BANDS[:, :3], tf.constant([3]))
    labels = sampled["labels"].numpy()[0]
    assert sampled["rois"].shape == (1, 10, 4)
    # Candidates: 3 proposals + the gt (4 < 10 slots): 3 foreground, 1 background, 6 empty.
    np.testing.assert_array_equal(labels, [2, 2, 2, 0] + [-1] * 6)
    # 2 proposals + the gt: 3 candidates padded to the 10 slots.
    labels = sample(BANDS[:, 1:3], tf.constant([2]))["labels"].numpy()[0]
    np.testing.assert_array_equal(labels, [2, 2, 0] + [-1] * 7)


def test_every_real_ground_truth_is_a_candidate_and_padding_rows_are_not():
    # Class 1 counts (labels >= 1); the padding row (label 0, a zero box) is no candidate even
    # where IoU 0 is background (bg_iou_low 0).
    gt = tf.constant([[[100.0, 100.0, 200.0, 220.0], [0.0, 0.0, 0.0, 0.0]]])
    sampled = sample_rois(
        tf.zeros([1, 1, 4]), tf.constant([0]), gt, tf.constant([[1, 0]]), num_rois=4, bg_iou_low=0.0
    )
    np.testing.assert_array_equal(sampled["labels"].numpy()[0], [1, -1, -1, -1])


def test_roi_sampling_is_a_function_of_the_seed():
    proposals, count = _proposals(n=400, seed=3)
    first = sample_rois(proposals, count, GT, GT_LABELS, seed=tf.constant([5, 0]))
    again = sample_rois(proposals, count, GT, GT_LABELS, seed=tf.constant([5, 0]))
    other = sample_rois(proposals, count, GT, GT_LABELS, seed=tf.constant([6, 0]))
    for key in ("rois", "labels", "targets"):
        np.testing.assert_array_equal(first[key], again[key])
    labels = first["labels"].numpy()[0]
    for chosen in (labels > 0, labels == 0):  # both subsets move with the seed
        mine = {tuple(r) for r in first["rois"].numpy()[0][chosen]}
        theirs = {
            tuple(r)
            for r in other["rois"].numpy()[0][other["labels"].numpy()[0] == labels[chosen][0]]
        }
        assert mine != theirs
    # With a cap below the foreground candidates (2 of 8+), the foreground subset is seeded too.
    fg = [
        sample_rois(proposals, count, GT, GT_LABELS, num_rois=8, seed=tf.constant([s, 0]))
        for s in (5, 5, 6)
    ]
    sets = [{tuple(r) for r in f["rois"].numpy()[0][f["labels"].numpy()[0] > 0]} for f in fg]
    assert len(sets[0]) == 2 and sets[0] == sets[1] and sets[0] != sets[2]


def test_top_iou_leaves_what_it_cannot_fill_empty_and_background_to_its_share():
    # fg_iou 0.7: foreground the proposal equal to the gt and the gt; 7 foreground slots of 14.
    # The candidates of IoU > 0 (0.6, 0.4, 0.067) take 3 more; the 20 IoU-0 boxes are only
    # background, which keeps to its 7 slots: 2 slots stay empty.
    far = [[500.0 + 10 * i, 500.0, 560.0 + 10 * i, 560.0] for i in range(20)]
    proposals = tf.concat([BANDS[:, :5], tf.constant([far])], axis=1)
    sampled = sample_rois(
        proposals,
        tf.constant([25]),
        GT[:, :1],
        GT_LABELS[:, :1],
        num_rois=14,
        fg_fraction=0.5,
        fg_iou=0.7,
        bg_iou_low=0.0,
        fill="top_iou",
        seed=0,
    )
    labels, rois = sampled["labels"].numpy()[0], sampled["rois"].numpy()[0]
    assert ((labels > 0).sum(), (labels == 0).sum(), (labels == -1).sum()) == (5, 7, 2)
    assert all(r[0] >= 500 for r in rois[labels == 0])
    assert not any(r[0] >= 500 for r in rois[labels > 0])


def _reference_roi_pool(feature_map, rois, pool_size, stride):
    """ROI pooling in numpy: 2s x 2s bilinear samples from each box's first to its last
    projected point (p / stride - 0.5), clamped to the edge up to 2 cells outside the map and
    zero beyond, then the max of each 2 x 2."""
    _, height, width, channels = feature_map.shape
    crop = 2 * pool_size
    out = []
    for b, image_rois in enumerate(rois):
        for box in image_rois:
            y0, x0, y1, x1 = np.asarray(box, np.float64) / stride - 0.5
            ys = y0 + np.arange(crop) * (y1 - y0) / (crop - 1)
            xs = x0 + np.arange(crop) * (x1 - x0) / (crop - 1)
            samples = np.zeros((crop, crop, channels))
            for i, y in enumerate(ys):
                for j, x in enumerate(xs):
                    if not (-2 <= y <= height + 1 and -2 <= x <= width + 1):
                        continue
                    y, x = min(max(y, 0.0), height - 1), min(max(x, 0.0), width - 1)
                    ya, xa = int(np.floor(y)), int(np.floor(x))
                    yb, xb = min(ya + 1, height - 1), min(xa + 1, width - 1)
                    dy, dx = y - ya, x - xa
                    f = feature_map[b]
                    top = f[ya, xa] * (1 - dx) + f[ya, xb] * dx
                    bottom = f[yb, xa] * (1 - dx) + f[yb, xb] * dx
                    samples[i, j] = top * (1 - dy) + bottom * dy
            out.append(samples.reshape(pool_size, 2, pool_size, 2, channels).max(axis=(1, 3)))
    return np.stack(out)


def test_both_poolings_equal_the_numpy_reference():
    rng = np.random.default_rng(1)
    feature_map = rng.normal(size=(2, 5, 7, 3)).astype(np.float32)
    corners = rng.uniform(-30, 140, size=(2, 6, 2, 2))
    rois = np.concatenate([corners.min(axis=2), corners.max(axis=2)], axis=-1)
    rois[1, 0] = [0, 0, 40, 56]  # the whole 40 x 56 image: ends on the map's last half cell
    rois[1, 1] = [-60, -60, -45, -45]  # more than 2 cells outside: zeros
    # Samples exactly 2 cells outside (feature coordinate -2 and h + 1 = 6, w + 1 = 8): clamped.
    rois[1, 2] = [-12, -12, 52, 68]
    rois = rois.astype(np.float32)
    expected = _reference_roi_pool(feature_map, rois, pool_size=3, stride=8)
    assert np.any(expected[6]) and not np.any(expected[7])
    for layer in (ROIPooling, ROIPoolingBuiltin):
        pooled = layer(pool_size=3, stride=8)(tf.constant(feature_map), tf.constant(rois))
        assert pooled.shape == (12, 3, 3, 3)
        np.testing.assert_allclose(pooled.numpy(), expected, atol=1e-4, err_msg=layer.__name__)
        clone = layer.from_config(layer(pool_size=3, stride=8).get_config())
        assert (clone.pool_size, clone.stride) == (3, 8)
