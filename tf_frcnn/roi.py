"""Region-of-interest stage: the ROI sampler that makes the detector's training
targets (the "proposal target" step), and ROI pooling on the shared feature map."""

import keras
import tensorflow as tf

from tf_frcnn import boxes as box_ops
from tf_frcnn import matcher, sampling

FILL_MODES = ("negatives", "zeros", "top_iou")


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


@keras.saving.register_keras_serializable(package="tf_frcnn")
class ROIPooling(keras.layers.Layer):
    """ROI pooling by ``tf.image.crop_and_resize`` to 2s x 2s, then 2x2 max
    pooling to s x s (s = ``pool_size``, 7 for VGG16).

    Call with ``(feature_map [batch, h, w, C], rois [batch, R, 4])``, rois in
    absolute input pixels [ymin, xmin, ymax, xmax]. Returns float32
    [batch * R, s, s, C], image-major.
    """

    def __init__(self, pool_size=7, stride=16, **kwargs):
        super().__init__(**kwargs)
        self.pool_size = pool_size
        self.stride = stride

    def _normalized_boxes(self, feature_map, rois):
        shape = tf.shape(feature_map)
        size = tf.cast(tf.stack([shape[1], shape[2], shape[1], shape[2]]) - 1, tf.float32)
        flat = tf.reshape(_feature_coordinates(rois, self.stride), [-1, 4])
        return flat / tf.maximum(size, 1.0)

    def call(self, feature_map, rois):
        batch = tf.shape(rois)[0]
        per_image = tf.shape(rois)[1]
        box_index = tf.repeat(tf.range(batch), per_image)
        crop = 2 * self.pool_size
        crops = tf.image.crop_and_resize(
            feature_map, self._normalized_boxes(feature_map, rois), box_index, [crop, crop]
        )
        return tf.nn.max_pool2d(crops, 2, 2, "VALID")

    def get_config(self):
        config = super().get_config()
        config.update(pool_size=self.pool_size, stride=self.stride)
        return config


@keras.saving.register_keras_serializable(package="tf_frcnn")
class ROIPoolingBuiltin(ROIPooling):
    """The same pooling as :class:`ROIPooling` written with gathers and bilinear
    arithmetic only, because ``CropAndResize`` is not a TFLite built-in op.
    Samples exactly where ``crop_and_resize`` does (endpoints included, zero
    outside the map), so the two agree to float rounding."""

    def call(self, feature_map, rois):
        shape = tf.shape(feature_map)
        batch, height, width = shape[0], shape[1], shape[2]
        channels = feature_map.shape[-1]
        per_image = tf.shape(rois)[1]
        crop = 2 * self.pool_size
        boxes = self._normalized_boxes(feature_map, rois)  # [N, 4]
        steps = tf.range(crop, dtype=tf.float32) / float(crop - 1)  # [crop]
        h_1 = tf.cast(height - 1, tf.float32)
        w_1 = tf.cast(width - 1, tf.float32)
        ys = (boxes[:, 0:1] + steps * (boxes[:, 2:3] - boxes[:, 0:1])) * h_1  # [N, crop]
        xs = (boxes[:, 1:2] + steps * (boxes[:, 3:4] - boxes[:, 1:2])) * w_1
        y_inside = (ys >= 0.0) & (ys <= h_1)
        x_inside = (xs >= 0.0) & (xs <= w_1)
        y0 = tf.floor(ys)
        x0 = tf.floor(xs)
        dy = ys - y0
        dx = xs - x0
        y0i = tf.clip_by_value(tf.cast(y0, tf.int32), 0, height - 1)
        x0i = tf.clip_by_value(tf.cast(x0, tf.int32), 0, width - 1)
        y1i = tf.minimum(y0i + 1, height - 1)
        x1i = tf.minimum(x0i + 1, width - 1)

        flat = tf.reshape(feature_map, [-1, channels])
        base = (tf.repeat(tf.range(batch), per_image) * height * width)[:, tf.newaxis, tf.newaxis]

        def at(yi, xi):
            index = base + yi[:, :, tf.newaxis] * width + xi[:, tf.newaxis, :]
            return tf.gather(flat, index)  # [N, crop, crop, C]

        dy = dy[:, :, tf.newaxis, tf.newaxis]
        dx = dx[:, tf.newaxis, :, tf.newaxis]
        top = at(y0i, x0i) + (at(y0i, x1i) - at(y0i, x0i)) * dx
        bottom = at(y1i, x0i) + (at(y1i, x1i) - at(y1i, x0i)) * dx
        crops = top + (bottom - top) * dy
        inside = y_inside[:, :, tf.newaxis] & x_inside[:, tf.newaxis, :]
        crops = crops * tf.cast(inside, crops.dtype)[..., tf.newaxis]
        crops = tf.reshape(crops, [-1, self.pool_size, 2, self.pool_size, 2, channels])
        return tf.reduce_max(crops, axis=[2, 4])
