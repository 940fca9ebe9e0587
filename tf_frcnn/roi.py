"""Region-of-interest stage: the ROI sampler that makes the detector's training
targets (the "proposal target" step), and ROI pooling on the shared feature map."""

import keras
import tensorflow as tf

from tf_frcnn import boxes as box_ops
from tf_frcnn import matcher, sampling
from tf_frcnn.choices import FILL_MODES


def sample_rois(
    proposals,
    num_proposals,
    gt_boxes,
    gt_labels,
    *,
    num_rois=128,
    fg_fraction=0.25,
    fg_iou=0.5,
    bg_iou_low=0.1,
    bg_iou_high=0.5,
    fill="negatives",
    box_stds=box_ops.DETECTOR_BOX_STDS,
    seed=None,
):
    """Sample a fixed number of ROIs per image and their training targets.

    Candidates are the proposals plus the ground-truth boxes. Foreground: IoU
    >= ``fg_iou`` with a ground truth, at most ``fg_fraction * num_rois`` of
    them. Background: IoU in [``bg_iou_low``, ``bg_iou_high``). The slots
    foreground leaves free are filled according to ``fill``:

    - "negatives" (the paper: 128 ROIs, 25% foreground): with background.
    - "zeros" (the seed's 256 @ 1:1): background takes at most its own share
      ``(1 - fg_fraction) * num_rois``; the rest are zero boxes, ignored.
    - "top_iou" (the seed's alternative): the missing foreground slots take the
      remaining candidates of highest IoU, labelled with their ground truth.

    Slots nothing can fill hold zero boxes with label -1 (ignored by the loss).

    Args:
      proposals: float32 [batch, P, 4] absolute [ymin, xmin, ymax, xmax].
      num_proposals: int32 [batch], valid proposals per image (rest padding).
      gt_boxes: float32 [batch, M, 4] absolute [ymin, xmin, ymax, xmax].
      gt_labels: int32 [batch, M], 1-based classes, 0 marks padding.
      seed: None or int32 [2] stateless seed (see ``tf_frcnn.sampling``).

    Returns:
      dict of "rois" float32 [batch, num_rois, 4] absolute boxes, "labels"
      int32 [batch, num_rois] (class >= 1 foreground, 0 background, -1
      ignored), "targets" float32 [batch, num_rois, 4] deltas (ty, tx, th, tw)
      to the matched ground truth divided by ``box_stds`` (zero unless
      foreground).
    """
    if fill not in FILL_MODES:
        raise ValueError(f"fill must be one of {FILL_MODES}, got {fill!r}")
    num_props = proposals.shape[1] if proposals.shape[1] is not None else tf.shape(proposals)[1]
    proposal_valid = tf.range(num_props)[tf.newaxis, :] < num_proposals[:, tf.newaxis]
    gt_valid = gt_labels > 0
    candidates = tf.concat([proposals, gt_boxes], axis=1)  # [B, P+M, 4]
    candidate_valid = tf.concat([proposal_valid, gt_valid], axis=1)
    num_candidates = candidates.shape[1]
    if num_candidates is None or num_candidates < num_rois:
        # Fewer candidates than ROI slots: pad so the slots can be gathered.
        missing = tf.maximum(num_rois - tf.shape(candidates)[1], 0)
        candidates = tf.pad(candidates, [[0, 0], [0, missing], [0, 0]])
        candidate_valid = tf.pad(candidate_valid, [[0, 0], [0, missing]])

    matches = matcher.match(candidates, candidate_valid, gt_boxes, gt_labels)
    max_iou = matches["max_iou"]
    foreground, background = matcher.roi_labels(
        matches, candidate_valid, fg_iou, bg_iou_low, bg_iou_high
    )
    num_fg_max = int(round(num_rois * fg_fraction))
    foreground = sampling.subsample(foreground, num_fg_max, sampling.derive(seed, 0))
    num_fg = sampling.count(foreground)

    extra_fg = tf.zeros_like(foreground)
    if fill == "negatives":
        bg_cap = num_rois - num_fg
    elif fill == "zeros":
        bg_cap = tf.fill(tf.shape(num_fg), num_rois - num_fg_max)
    else:
        rest = candidate_valid & ~foreground & (max_iou > 0.0)
        order = tf.argsort(
            tf.where(rest, max_iou, -2.0), axis=-1, direction="DESCENDING", stable=True
        )
        rank = tf.argsort(order, axis=-1, stable=True)
        extra_fg = rest & (rank < (num_fg_max - num_fg)[:, tf.newaxis])
        bg_cap = tf.fill(tf.shape(num_fg), num_rois - num_fg_max)
        background = background & ~extra_fg
    background = sampling.subsample(background, bg_cap, sampling.derive(seed, 1))

    is_fg = foreground | extra_fg
    # Foreground first, then background, then the unfilled slots.
    priority = tf.where(is_fg, 2.0, tf.where(background, 1.0, 0.0))
    priority += sampling.uniform(tf.shape(priority), sampling.derive(seed, 2), maxval=0.5)
    _, index = tf.math.top_k(priority, k=num_rois)
    chosen_fg = tf.gather(is_fg, index, batch_dims=1)
    chosen_bg = tf.gather(background, index, batch_dims=1)
    chosen = chosen_fg | chosen_bg

    rois = tf.where(chosen[..., tf.newaxis], tf.gather(candidates, index, batch_dims=1), 0.0)
    labels = tf.where(
        chosen_fg, tf.gather(matches["labels"], index, batch_dims=1), tf.where(chosen_bg, 0, -1)
    )
    targets = box_ops.encode(tf.gather(matches["boxes"], index, batch_dims=1), rois, stds=box_stds)
    targets = tf.where(chosen_fg[..., tf.newaxis], targets, 0.0)
    return {"rois": tf.stop_gradient(rois), "labels": labels, "targets": tf.stop_gradient(targets)}


def _feature_coordinates(rois, stride):
    """Project absolute image boxes onto the feature map: pixel p lies at
    continuous feature coordinate p / stride - 0.5, since cell i is centred on
    pixel (i + 0.5) * stride."""
    return rois / float(stride) - 0.5


# Cells outside the map within which ROI pooling clamps a sample to the edge (zero beyond).
# A box inside the image ends at most at h - 0.5 ('same' backbones, h = ceil(H / stride)) or
# just short of h + 0.5 (VGG16's 'valid' max pools, h = floor(H / stride): 600 px end at 37.0
# on 37 cells), so with two cells no such box reaches the jump to zero: at a jump, the two
# implementations' different rounding of the same sample gave the edge value in one and 0 in
# the other.
_CLAMP_MARGIN = 2


def _bilinear_corners(coordinates, size, margin):
    """Bilinear sampling along one axis of a map of ``size`` cells, clamped to the edge up to
    ``margin`` cells outside it: (low index, high index, weight of the high one, inside the
    margin) for float32 ``coordinates`` (int32, int32, float32, bool, each of their shape)."""
    last = tf.cast(size - 1, tf.float32)
    inside = (coordinates >= -float(margin)) & (coordinates <= last + margin)
    coordinates = tf.clip_by_value(coordinates, 0.0, last)
    low = tf.floor(coordinates)
    low_i = tf.cast(low, tf.int32)
    return low_i, tf.minimum(low_i + 1, size - 1), coordinates - low, inside


def _bilinear_samples(cells, base, ys, xs, heights, widths, margin):
    """float [N, crop, crop, C] bilinear samples at rows ``ys`` x columns ``xs`` (float32
    [N, crop], feature coordinates) of maps of ``heights`` x ``widths`` cells (int32, scalars
    or [N, 1]) stored as ``cells`` [cells, C], cell (y, x) of ROI n at row base[n] + y * width
    + x (``base`` int32 [N, 1, 1]); clamped to the edge up to ``margin`` cells outside the map
    (``_bilinear_corners``), zero beyond."""
    y0, y1, dy, y_inside = _bilinear_corners(ys, heights, margin)
    x0, x1, dx, x_inside = _bilinear_corners(xs, widths, margin)
    row = widths[:, :, tf.newaxis] if widths.shape.rank else widths

    def at(y, x):
        return tf.gather(cells, base + y[:, :, tf.newaxis] * row + x[:, tf.newaxis, :])

    dtype = cells.dtype
    dy = tf.cast(dy, dtype)[:, :, tf.newaxis, tf.newaxis]
    dx = tf.cast(dx, dtype)[:, tf.newaxis, :, tf.newaxis]
    top = at(y0, x0) + (at(y0, x1) - at(y0, x0)) * dx
    bottom = at(y1, x0) + (at(y1, x1) - at(y1, x0)) * dx
    samples = top + (bottom - top) * dy
    inside = y_inside[:, :, tf.newaxis] & x_inside[:, tf.newaxis, :]
    return samples * tf.cast(inside, dtype)[..., tf.newaxis]


@keras.saving.register_keras_serializable(package="tf_frcnn")
class ROIPooling(keras.layers.Layer):
    """ROI pooling by ``tf.image.crop_and_resize`` to 2s x 2s, then 2x2 max
    pooling to s x s (s = ``pool_size``, 7 for VGG16).

    At the border a sample outside the map takes the nearest edge cell's value (RoIAlign's
    clamping, as :class:`MultiLevelRoIAlign`; 0 only more than two cells outside): a box
    touching the image's bottom/right border ends half a cell past the last cell's centre,
    on the image's own last pixels.

    Call with ``(feature_map [batch, h, w, C], rois [batch, R, 4])``, rois in
    absolute input pixels [ymin, xmin, ymax, xmax]. Returns float32
    [batch * R, s, s, C], image-major.
    """

    def __init__(self, pool_size=7, stride=16, **kwargs):
        super().__init__(**kwargs)
        self.pool_size = pool_size
        self.stride = stride

    def call(self, feature_map, rois):
        batch = tf.shape(rois)[0]
        per_image = tf.shape(rois)[1]
        box_index = tf.repeat(tf.range(batch), per_image)
        crop = 2 * self.pool_size
        # Each SYMMETRIC pad of one cell copies the edge: the margin holds the clamped values,
        # and crop_and_resize's extrapolation value gives the 0 beyond it.
        padded = feature_map
        for _ in range(_CLAMP_MARGIN):
            padded = tf.pad(padded, [[0, 0], [1, 1], [1, 1], [0, 0]], mode="SYMMETRIC")
        # Normalised to the padded map: (c + margin) / (padded size - 1).
        size = tf.cast(tf.shape(feature_map)[1:3], tf.float32) + (2 * _CLAMP_MARGIN - 1)
        boxes = _feature_coordinates(tf.reshape(rois, [-1, 4]), self.stride) + _CLAMP_MARGIN
        crops = tf.image.crop_and_resize(
            padded, boxes / tf.tile(size, [2]), box_index, [crop, crop]
        )
        return tf.nn.max_pool2d(crops, 2, 2, "VALID")

    def get_config(self):
        return {**super().get_config(), "pool_size": self.pool_size, "stride": self.stride}


@keras.saving.register_keras_serializable(package="tf_frcnn")
class ROIPoolingBuiltin(ROIPooling):
    """The same pooling as :class:`ROIPooling` written with gathers and bilinear
    arithmetic only, because ``CropAndResize`` is not a TFLite built-in op.
    Samples exactly where ``crop_and_resize`` does (endpoints included, clamped to
    the edge up to two cells outside the map, zero beyond), so the two agree to float
    rounding."""

    def call(self, feature_map, rois):
        shape = tf.shape(feature_map)
        batch, height, width = shape[0], shape[1], shape[2]
        channels = feature_map.shape[-1]
        per_image = tf.shape(rois)[1]
        crop = 2 * self.pool_size
        boxes = _feature_coordinates(tf.reshape(rois, [-1, 4]), self.stride)  # [N, 4]
        steps = tf.range(crop, dtype=tf.float32) / float(crop - 1)  # [crop]
        ys = boxes[:, 0:1] + steps * (boxes[:, 2:3] - boxes[:, 0:1])  # [N, crop]
        xs = boxes[:, 1:2] + steps * (boxes[:, 3:4] - boxes[:, 1:2])
        flat = tf.reshape(feature_map, [-1, channels])
        base = (tf.repeat(tf.range(batch), per_image) * height * width)[:, tf.newaxis, tf.newaxis]
        crops = _bilinear_samples(flat, base, ys, xs, height, width, _CLAMP_MARGIN)
        crops = tf.reshape(crops, [-1, self.pool_size, 2, self.pool_size, 2, channels])
        return tf.reduce_max(crops, axis=[2, 4])


def level_of(rois, canonical_size=224, canonical_level=4, min_level=2, max_level=5):
    """The pyramid level each ROI is pooled from (FPN Eq. 1): floor(k0 + log2(sqrt(w h) / 224))
    with k0 = ``canonical_level`` and 224 = ``canonical_size``, clamped to
    [``min_level``, ``max_level``]. Counted as the thresholds sqrt(w h) >= 224 * 2**(k - k0)
    the box passes (w h against their squares): exact at the powers of two, where a float32
    log2 can fall just short, and a zero-area box lands on ``min_level``.

    Args:
      rois: float32 [..., 4] absolute [ymin, xmin, ymax, xmax] in resized-image pixels.

    Returns:
      int32 [...] levels.
    """
    rois = tf.cast(rois, tf.float32)
    height = tf.maximum(rois[..., 2] - rois[..., 0], 0.0)
    width = tf.maximum(rois[..., 3] - rois[..., 1], 0.0)
    area = height * width
    level = tf.fill(tf.shape(area), min_level)
    for k in range(min_level + 1, max_level + 1):
        threshold = (canonical_size * 2.0 ** (k - canonical_level)) ** 2
        level += tf.cast(area >= threshold, tf.int32)
    return level


@keras.saving.register_keras_serializable(package="tf_frcnn")
class MultiLevelRoIAlign(keras.layers.Layer):
    """RoIAlign on a feature pyramid (Mask R-CNN's RoIAlign, detectron2's ``aligned=True``),
    each ROI pooled from its own level (:func:`level_of`).

    A ROI is scaled to its level (stride 2**level) and shifted by -0.5, so that pixel p lies at
    feature coordinate p / stride - 0.5; each of the s x s bins (s = ``pool_size``) averages
    ``sampling_ratio`` x ``sampling_ratio`` bilinear samples at the centres of its sub-bins.
    At the border the samples follow RoIAlign's own rule (detectron2, torchvision): clamped to
    the map up to one cell outside it, zero beyond.

    ``builtin=False`` samples with ``tf.image.crop_and_resize`` on the map padded by one
    replicated edge cell (the padding does the clamping, its extrapolation value the zeros);
    ``builtin=True`` gathers the 4 bilinear neighbours from the levels flattened into one tensor
    with built-in TFLite ops only (``CropAndResize`` is not one), for TFLite and XLA. The two
    agree to float rounding.

    Call with ``(feature_maps, rois)``: ``feature_maps`` a list of float [batch, h_l, w_l, C],
    levels ``min_level`` .. ``max_level``; ``rois`` float32 [batch, R, 4] absolute
    [ymin, xmin, ymax, xmax] in resized-image pixels. Returns float32
    [batch * R, pool_size, pool_size, C], image-major (as :class:`ROIPooling`).
    """

    def __init__(
        self,
        pool_size=7,
        sampling_ratio=2,
        canonical_size=224,
        canonical_level=4,
        min_level=2,
        max_level=5,
        builtin=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.pool_size = pool_size
        self.sampling_ratio = sampling_ratio
        self.canonical_size = canonical_size
        self.canonical_level = canonical_level
        self.min_level = min_level
        self.max_level = max_level
        self.builtin = builtin

    def call(self, feature_maps, rois):
        feature_maps = list(feature_maps)
        if len(feature_maps) != self.max_level - self.min_level + 1:
            raise ValueError(
                f"{len(feature_maps)} feature maps for levels {self.min_level}..{self.max_level}"
            )
        per_image = tf.shape(rois)[1]
        box_index = tf.repeat(tf.range(tf.shape(rois)[0]), per_image)
        flat = tf.reshape(tf.cast(rois, tf.float32), [-1, 4])
        levels = level_of(
            flat, self.canonical_size, self.canonical_level, self.min_level, self.max_level
        )
        pool = self._gather if self.builtin else self._crop_and_resize
        return pool(feature_maps, flat, box_index, levels)

    def _crop_and_resize(self, feature_maps, flat, box_index, levels):
        crop = self.pool_size * self.sampling_ratio
        positions, pooled = [], []
        for level, feature_map in enumerate(feature_maps, self.min_level):
            position = tf.cast(tf.where(levels == level)[:, 0], tf.int32)
            boxes = _feature_coordinates(tf.gather(flat, position), 2**level)
            # crop_and_resize samples both box ends: moving them in by half a sample
            # spacing puts the crop x crop samples at the sub-bin centres.
            half_step = (boxes[:, 2:] - boxes[:, :2]) / (2.0 * crop)
            boxes = tf.concat([boxes[:, :2] + half_step, boxes[:, 2:] - half_step], axis=1)
            # One replicated cell around the map: samples within a cell outside are clamped,
            # those further out get the extrapolation value 0.
            padded = tf.pad(feature_map, [[0, 0], [1, 1], [1, 1], [0, 0]], mode="SYMMETRIC")
            # Normalised to the padded map: (y + 1) / (padded height - 1).
            size = tf.cast(tf.shape(feature_map)[1:3], tf.float32)
            normalized = (boxes + 1.0) / tf.tile(size + 1.0, [2])
            crops = tf.image.crop_and_resize(
                padded, normalized, tf.gather(box_index, position), [crop, crop]
            )
            positions.append(position)
            pooled.append(
                tf.nn.avg_pool2d(crops, self.sampling_ratio, self.sampling_ratio, "VALID")
            )
        return tf.dynamic_stitch(positions, pooled)

    def _gather(self, feature_maps, flat, box_index, levels):
        crop = self.pool_size * self.sampling_ratio
        channels = feature_maps[0].shape[-1]
        shapes = [tf.shape(feature_map) for feature_map in feature_maps]
        heights = tf.stack([shape[1] for shape in shapes])
        widths = tf.stack([shape[2] for shape in shapes])
        starts = tf.cumsum(heights * widths, exclusive=True)
        # [batch, sum of h_l * w_l, C]: a cell's row is its level's start + y * w_l + x.
        cells = tf.concat(
            [tf.reshape(f, [shape[0], -1, channels]) for f, shape in zip(feature_maps, shapes)],
            axis=1,
        )
        total = tf.shape(cells)[1]
        cells = tf.reshape(cells, [-1, channels])

        index = levels - self.min_level
        height = tf.gather(heights, index)[:, tf.newaxis]  # [N, 1]
        width = tf.gather(widths, index)[:, tf.newaxis]
        strides = tf.constant(
            [2.0**level for level in range(self.min_level, self.max_level + 1)], tf.float32
        )
        boxes = flat / tf.gather(strides, index)[:, tf.newaxis] - 0.5
        steps = (tf.range(crop, dtype=tf.float32) + 0.5) / float(crop)  # sub-bin centres
        ys = boxes[:, 0:1] + steps * (boxes[:, 2:3] - boxes[:, 0:1])  # [N, crop]
        xs = boxes[:, 1:2] + steps * (boxes[:, 3:4] - boxes[:, 1:2])
        base = (box_index * total + tf.gather(starts, index))[:, tf.newaxis, tf.newaxis]
        samples = _bilinear_samples(cells, base, ys, xs, height, width, 1)
        size, ratio = self.pool_size, self.sampling_ratio
        samples = tf.reshape(samples, [-1, size, ratio, size, ratio, channels])
        return tf.reduce_mean(samples, axis=[2, 4])

    def get_config(self):
        names = ("pool_size", "sampling_ratio", "canonical_size", "canonical_level")
        names += ("min_level", "max_level", "builtin")
        return {**super().get_config(), **{name: getattr(self, name) for name in names}}
