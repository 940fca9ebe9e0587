"""Properties of the box math, the anchor labelling and NMS, fuzzed with hypothesis.

Deterministic (``derandomize=True``: the same examples every run, nothing stored in a
``.hypothesis`` database) with a modest number of examples, so CI time stays flat.
Boxes are absolute [ymin, xmin, ymax, xmax] float32 throughout.
"""

import numpy as np
import tensorflow as tf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tf_frcnn import ProposalLayer
from tf_frcnn import boxes as box_ops
from tf_frcnn.anchors import AnchorGenerator
from tf_frcnn.rpn import anchor_targets


def fuzz(max_examples=40):
    return settings(
        derandomize=True,
        database=None,
        deadline=None,
        max_examples=max_examples,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


@st.composite
def boxes(draw, min_size=1, max_size=6, min_side=0.0, max_side=80.0, low=-50.0, high=150.0):
    """float32 [N, 4] valid boxes (ymin <= ymax, xmin <= xmax)."""
    count = draw(st.integers(min_size, max_size))
    corner = st.floats(low, high, allow_nan=False)
    length = st.floats(min_side, max_side, allow_nan=False)
    rows = []
    for _ in range(count):
        y, x, h, w = draw(corner), draw(corner), draw(length), draw(length)
        rows.append([y, x, y + h, x + w])
    return np.array(rows, np.float32)


# -- IoU --------------------------------------------------------------------------------
@fuzz()
@given(boxes(), boxes())
def test_iou_is_within_unit_interval_and_symmetric(a, b):
    ab = box_ops.iou(a, b).numpy()
    ba = box_ops.iou(b, a).numpy()
    assert ab.shape == (len(a), len(b))
    assert np.all(ab >= 0.0) and np.all(ab <= 1.0)
    np.testing.assert_allclose(ab, ba.T, atol=1e-6)


@fuzz()
@given(boxes(min_side=1.0))
def test_iou_of_a_non_empty_box_with_itself_is_one(a):
    np.testing.assert_allclose(np.diag(box_ops.iou(a, a).numpy()), 1.0, atol=1e-5)


@fuzz()
@given(
    boxes(max_size=1, min_side=0.5),
    boxes(max_size=1, min_side=0.5),
    st.sampled_from(["above", "left"]),
    st.floats(0.0, 20.0),
)
def test_iou_of_disjoint_boxes_is_zero(a, b, where, gap):
    """``b`` moved to lie wholly above or left of ``a`` (touching when gap is 0)."""
    axis = 0 if where == "above" else 1
    length = b[0, axis + 2] - b[0, axis]
    b = b.copy()
    b[0, axis + 2] = np.float32(a[0, axis] - gap)  # never above a's edge, even rounded
    b[0, axis] = b[0, axis + 2] - length
    assert box_ops.iou(a, b).numpy()[0, 0] == 0.0


def test_iou_hand_computed():
    a = np.array([[0.0, 0.0, 10.0, 10.0]], np.float32)
    b = np.array([[5.0, 5.0, 15.0, 15.0]], np.float32)
    np.testing.assert_allclose(box_ops.iou(a, b).numpy(), [[25.0 / 175.0]], rtol=1e-6)


# -- encode / decode ----------------------------------------------------------------------
stds = st.tuples(*[st.floats(0.05, 2.0)] * 4)


@fuzz(60)
@given(
    st.integers(1, 6).flatmap(
        lambda n: st.tuples(
            boxes(n, n, min_side=2.0, max_side=100.0), boxes(n, n, min_side=2.0, max_side=100.0)
        )
    ),
    st.one_of(st.none(), stds),
)
def test_decode_inverts_encode(pair, box_stds):
    """Box and anchor sides in [2, 100]: scale ratios stay under decode's cap (62.5)."""
    targets, anchors = pair
    deltas = box_ops.encode(targets, anchors, box_stds)
    assert np.all(np.isfinite(deltas.numpy()))
    np.testing.assert_allclose(
        box_ops.decode(deltas, anchors, box_stds).numpy(), targets, rtol=1e-4, atol=2e-3
    )


@fuzz()
@given(boxes(min_side=1.0), st.one_of(st.none(), stds))
def test_an_anchor_encodes_itself_as_zero(anchors, box_stds):
    np.testing.assert_allclose(box_ops.encode(anchors, anchors, box_stds).numpy(), 0.0, atol=1e-5)


@fuzz()
@given(boxes(min_side=1.0), st.floats(-1e4, 1e4))
def test_decode_stays_finite_for_huge_deltas(anchors, delta):
    deltas = np.full(anchors.shape, delta, np.float32)
    assert np.all(np.isfinite(box_ops.decode(deltas, anchors).numpy()))


# -- clip ---------------------------------------------------------------------------------
@fuzz()
@given(
    st.integers(1, 3).flatmap(
        lambda batch: st.tuples(
            st.lists(boxes(4, 4), min_size=batch, max_size=batch),
            st.lists(
                st.tuples(st.integers(1, 120), st.integers(1, 120)), min_size=batch, max_size=batch
            ),
        )
    )
)
def test_clip_keeps_boxes_inside_and_is_idempotent(example):
    batch_boxes, shapes = example
    batch_boxes = np.stack(batch_boxes)
    image_shape = np.array(shapes, np.int32)
    clipped = box_ops.clip(tf.constant(batch_boxes), image_shape).numpy()
    limits = np.concatenate([image_shape, image_shape], axis=-1)[:, None, :]
    assert np.all(clipped >= 0.0) and np.all(clipped <= limits)
    np.testing.assert_array_equal(box_ops.clip(tf.constant(clipped), image_shape).numpy(), clipped)
    inside = np.all((batch_boxes >= 0) & (batch_boxes <= limits), axis=-1)
    np.testing.assert_array_equal(clipped[inside], batch_boxes[inside])


# -- anchor labelling ---------------------------------------------------------------------
@st.composite
def rpn_example(draw):
    """Anchors of a real generator on an image of 48-112 px (some cross its border), 1-2
    images with their own valid size, 0-4 ground-truth boxes each plus padding rows."""
    height, width = draw(st.integers(48, 112)), draw(st.integers(48, 112))
    generator = AnchorGenerator(base_size=16, scales=(0.5, 1, 2), ratios=(0.5, 1.0, 2.0))
    anchors = generator(tf.zeros([1, -(-height // 16), -(-width // 16), 1])).numpy()
    batch = draw(st.integers(1, 2))
    gt_boxes = np.zeros([batch, 5, 4], np.float32)
    gt_labels = np.zeros([batch, 5], np.int32)
    shapes = []
    for image in range(batch):
        image_h = draw(st.integers(max(16, height - 16), height))
        image_w = draw(st.integers(max(16, width - 16), width))
        shapes.append([image_h, image_w])
        count = draw(st.integers(0, 4))
        for row in range(count):
            y0 = draw(st.floats(0.0, image_h - 2.0))
            x0 = draw(st.floats(0.0, image_w - 2.0))
            y1 = draw(st.floats(y0 + 1.0, float(image_h)))
            x1 = draw(st.floats(x0 + 1.0, float(image_w)))
            gt_boxes[image, row] = [y0, x0, y1, x1]
            gt_labels[image, row] = draw(st.integers(1, 4))
    return anchors, gt_boxes, gt_labels, np.array(shapes, np.int32)


def _inside(anchors, image_shape):
    height, width = image_shape
    return (
        (anchors[:, 0] >= 0)
        & (anchors[:, 1] >= 0)
        & (anchors[:, 2] <= height)
        & (anchors[:, 3] <= width)
    )


@fuzz(40)
@given(
    rpn_example(),
    st.integers(1, 300),
    st.floats(0.0, 1.0),
    st.booleans(),
    st.integers(0, 2**31 - 1),
)
def test_anchor_labels_respect_caps_border_and_cover_every_object(
    example, batch_size, positive_fraction, ignore_cross_boundary, seed
):
    anchors, gt_boxes, gt_labels, image_shape = example
    labels, targets = anchor_targets(
        anchors,
        gt_boxes,
        gt_labels,
        image_shape,
        batch_size=batch_size,
        positive_fraction=positive_fraction,
        ignore_cross_boundary=ignore_cross_boundary,
        seed=tf.constant([seed % 1000, seed // 1000], tf.int32),
    )
    labels, targets = labels.numpy(), targets.numpy()
    overlaps = box_ops.iou(anchors, gt_boxes).numpy()  # [B, A, M]
    max_positive = int(batch_size * positive_fraction)
    assert set(np.unique(labels)) <= {-1, 0, 1}

    for image in range(len(labels)):
        valid = gt_labels[image] > 0
        usable = (
            _inside(anchors, image_shape[image])
            if ignore_cross_boundary
            else np.ones(len(anchors), bool)
        )
        iou = np.where(valid[None, :] & usable[:, None], overlaps[image], -1.0)
        best = iou.max(axis=1) if valid.any() else np.full(len(anchors), -1.0)
        positive, negative = labels[image] == 1, labels[image] == 0
        # Caps: at most batch_size * fraction positives; negatives fill the rest.
        assert positive.sum() <= max_positive
        assert positive.sum() + negative.sum() <= batch_size
        # Only anchors inside the image take part when crossing ones are ignored.
        assert np.all(usable[positive | negative])
        assert np.all(best[positive] > 0.0)
        assert np.all(best[negative] < 0.3)
        # Candidates are taken up to the caps: the sample is as large as it may be.
        candidate_negative = usable & (best < 0.3) & ~(best > 0.7)
        if positive.sum() < max_positive:
            assert negative.sum() == min(
                batch_size - positive.sum(), (candidate_negative & ~positive).sum()
            )
            # Uncapped positives: every object some usable anchor overlaps has a positive
            # anchor, one of those it overlaps most.
            for gt in np.flatnonzero(valid):
                if iou[:, gt].max() > 0.0:
                    assert np.any(positive & (iou[:, gt] == iou[:, gt].max())), gt
        # A positive's regression target decodes to the object it matched best.
        if positive.any():
            decoded = box_ops.decode(targets[image][positive], anchors[positive]).numpy()
            matched = gt_boxes[image][np.argmax(iou[positive], axis=1)]
            np.testing.assert_allclose(decoded, matched, rtol=1e-4, atol=2e-3)
        assert np.all(targets[image][~positive] == 0.0)


@fuzz(25)
@given(rpn_example(), st.integers(0, 2**31 - 1))
def test_paper_sampling_takes_at_most_128_positives_of_256(example, seed):
    """The paper's mini-batch (256 anchors, up to half positive) on a 16 px-stride map of
    600+ anchors."""
    anchors, gt_boxes, gt_labels, image_shape = example
    anchors = np.concatenate([anchors, anchors + 4.0, anchors + 8.0], axis=0)
    labels = anchor_targets(
        anchors, gt_boxes, gt_labels, image_shape, seed=tf.constant([seed % 1000, 7], tf.int32)
    )[0].numpy()
    assert np.all((labels == 1).sum(axis=1) <= 128)
    assert np.all((labels >= 0).sum(axis=1) <= 256)
    for image in range(len(labels)):
        inside = _inside(anchors, image_shape[image])
        assert np.all(inside[labels[image] >= 0])


# -- NMS in the proposal layer ------------------------------------------------------------
@st.composite
def rpn_outputs(draw):
    batch = draw(st.integers(1, 2))
    count = draw(st.integers(1, 60))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    anchors = boxes(count, count, min_side=4.0, max_side=60.0, low=-10.0, high=90.0)
    anchors = draw(anchors)
    logits = rng.normal(size=(batch, count, 2)).astype(np.float32)
    deltas = rng.normal(size=(batch, count, 4)) * draw(st.sampled_from([0.0, 0.1, 1.0]))
    if draw(st.booleans()):
        # Duplicated anchors and deltas: many exact overlaps for NMS to remove.
        anchors[count // 2 :] = anchors[: count - count // 2]
        deltas[:, count // 2 :] = deltas[:, : count - count // 2]
    shapes = [[draw(st.integers(16, 100)), draw(st.integers(16, 100))] for _ in range(batch)]
    return logits, deltas.astype(np.float32), anchors, np.array(shapes, np.int32)


@fuzz(40)
@given(
    rpn_outputs(),
    st.integers(1, 40),
    st.integers(1, 20),
    st.floats(0.05, 0.95),
    st.sampled_from([0.0, 2.0, 8.0]),
)
def test_nms_keeps_no_pair_above_the_threshold_and_pads_with_zeros(
    outputs, pre_nms, post_nms, nms_iou, min_size
):
    logits, deltas, anchors, image_shape = outputs
    layer = ProposalLayer(
        test_pre_nms=pre_nms, test_post_nms=post_nms, nms_iou=nms_iou, min_size=min_size
    )
    proposals, scores, counts = (t.numpy() for t in layer(logits, deltas, anchors, image_shape))
    assert proposals.shape == (len(logits), post_nms, 4) and scores.shape == (len(logits), post_nms)
    for image, count in enumerate(counts):
        assert 0 <= count <= min(post_nms, pre_nms, len(anchors))
        kept = proposals[image, :count]
        assert np.all(proposals[image, count:] == 0.0) and np.all(scores[image, count:] == 0.0)
        if count == 0:
            continue
        overlaps = box_ops.iou(kept, kept).numpy()
        np.fill_diagonal(overlaps, 0.0)
        assert overlaps.max() <= nms_iou + 1e-5
        height, width = image_shape[image]
        assert np.all(kept >= 0.0) and np.all(kept <= [height, width, height, width])
        assert np.all(kept[:, 2] - kept[:, 0] >= min_size)
        assert np.all(kept[:, 3] - kept[:, 1] >= min_size)
        assert np.all(np.diff(scores[image, :count]) <= 0.0)
        assert np.all((scores[image, :count] >= 0.0) & (scores[image, :count] <= 1.0))
