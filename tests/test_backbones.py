"""Backbones: stride-16 feature maps, normalisation layers, freezing, weight files, region-wise
heads."""

import h5py
import keras
import numpy as np
import pytest
from keras.src.legacy.saving import legacy_h5_format

from tf_frcnn.backbones import (
    BACKBONES,
    Backbone,
    CaffePreprocessing,
    build_backbone,
    feature_size,
    head_defaults,
    preprocessing_layer,
)
from tf_frcnn.head import FastRCNNHead

CHANNELS = {"vgg16": 512, "resnet50": 1024, "mobilenet": 128, "tiny": 128}


@pytest.fixture(scope="module")
def backbones():
    """One random-init build of each backbone."""
    return {name: build_backbone(name) for name in BACKBONES}


def pixels(shape, seed=0):
    return np.random.default_rng(seed).uniform(0.0, 255.0, shape).astype("float32")


@pytest.mark.parametrize("name", BACKBONES)
def test_feature_map_has_stride_16_and_the_backbone_channels(backbones, name):
    backbone = backbones[name]
    assert isinstance(backbone, Backbone)
    assert backbone.name == name
    assert backbone.stride == 16
    assert backbone.features.output.shape[-1] == CHANNELS[name]
    assert backbone.pool_size == 7
    assert backbone.fc_weights is None

    feature_map = backbone.features(pixels((2, 64, 96, 3)))

    assert tuple(feature_map.shape) == (2, 4, 6, CHANNELS[name])


@pytest.mark.parametrize("name", BACKBONES)
def test_feature_map_sizes_for_800x800_and_320x480(backbones, name):
    features = backbones[name].features

    assert features.compute_output_shape((1, 800, 800, 3)) == (1, 50, 50, CHANNELS[name])
    assert features.compute_output_shape((1, 320, 480, 3)) == (1, 20, 30, CHANNELS[name])


@pytest.mark.parametrize("name", ["tiny", "vgg16"])
def test_800x800_image_gives_a_50x50_feature_map(backbones, name):
    feature_map = backbones[name].features(pixels((1, 800, 800, 3)))

    assert tuple(feature_map.shape) == (1, 50, 50, CHANNELS[name])


def test_feature_map_size_formulas_for_odd_sizes(backbones):
    # vgg16 floor(H/16); resnet50 and tiny ceil(H/16); mobilenet floor(ceil(H/2)/8).
    expected = {"vgg16": (3, 6), "resnet50": (4, 7), "mobilenet": (4, 6), "tiny": (4, 7)}
    for name, (h, w) in expected.items():
        shape = backbones[name].features.compute_output_shape((1, 63, 97, 3))
        assert shape[1:3] == (h, w), name


def test_feature_size_matches_the_built_backbones(backbones):
    for name, backbone in backbones.items():
        for height, width in ((63, 97), (600, 800), (512, 337), (16, 17), (1000, 601)):
            shape = backbone.features.compute_output_shape((1, height, width, 3))
            assert shape[1:3] == (feature_size(name, height), feature_size(name, width)), name


@pytest.mark.parametrize(
    "name, reference",
    [
        ("vgg16", keras.applications.vgg16.preprocess_input),
        ("resnet50", keras.applications.resnet50.preprocess_input),
        ("mobilenet", keras.applications.mobilenet.preprocess_input),
    ],
)
def test_preprocessing_layer_matches_keras_applications(name, reference):
    images = pixels((2, 5, 7, 3))

    normalised = keras.ops.convert_to_numpy(preprocessing_layer(name)(images))

    np.testing.assert_allclose(normalised, reference(images.copy()), rtol=0, atol=1e-5)


def test_tiny_preprocessing_maps_pixels_to_minus_one_one():
    normalised = keras.ops.convert_to_numpy(
        preprocessing_layer("tiny")(np.array([[0.0, 127.5, 255.0]]))
    )

    np.testing.assert_allclose(normalised, [[-1.0, 0.0, 1.0]], atol=1e-6)


@pytest.mark.parametrize("name", BACKBONES)
def test_normalisation_is_the_first_layer_of_features(backbones, name):
    features = backbones[name].features
    first = features.layers[1]

    assert first.name == "preprocessing"
    assert type(first) is type(preprocessing_layer(name))


def test_caffe_preprocessing_works_on_symbolic_tensors():
    images = keras.Input(shape=(None, None, 3))
    model = keras.Model(images, CaffePreprocessing()(images))
    batch = pixels((1, 4, 4, 3))

    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(model(batch)),
        keras.applications.vgg16.preprocess_input(batch.copy()),
        atol=1e-5,
    )


def test_caffe_preprocessing_config_round_trip():
    layer = CaffePreprocessing(mean=(1.0, 2.0, 3.0), name="caffe")
    batch = pixels((1, 3, 3, 3))

    config = keras.saving.serialize_keras_object(layer)
    restored = keras.saving.deserialize_keras_object(config)

    assert isinstance(restored, CaffePreprocessing)
    assert restored.name == "caffe"
    assert restored.mean == (1.0, 2.0, 3.0)
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(restored(batch)), keras.ops.convert_to_numpy(layer(batch))
    )


def test_features_model_with_caffe_preprocessing_saves_and_loads(tmp_path):
    images = keras.Input(shape=(None, None, 3))
    x = CaffePreprocessing()(images)
    model = keras.Model(images, keras.layers.Conv2D(2, 3, name="conv")(x))
    batch = pixels((1, 8, 8, 3))
    path = str(tmp_path / "model.keras")

    model.save(path)
    restored = keras.saving.load_model(path)

    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(restored(batch)), keras.ops.convert_to_numpy(model(batch))
    )


def test_vgg16_head_maps_pooled_rois_to_4096_with_dropout(backbones):
    head = FastRCNNHead.for_backbone(backbones["vgg16"], num_classes=20)
    roi_features = pixels((3, 7, 7, 512)) / 255.0

    fc7 = head.region_features(roi_features)

    assert tuple(fc7.shape) == (3, 4096)
    assert head.fcs[0].kernel.shape == (25088, 4096)
    assert head.fcs[1].kernel.shape == (4096, 4096)
    assert [dropout.rate for dropout in head.dropouts] == [0.5, 0.5]


def test_other_backbones_default_to_two_1024_fc_layers_and_fc_units_apply_to_vgg16_too(backbones):
    assert head_defaults("vgg16") == ((4096, 4096), 0.5)
    for name in ("resnet50", "mobilenet", "tiny"):
        assert head_defaults(name) == ((1024, 1024), 0.0)

    head = FastRCNNHead.for_backbone(backbones["vgg16"], num_classes=3, fc_units=(64, 64))

    assert tuple(head.region_features(pixels((5, 7, 7, 512))).shape) == (5, 64)
    assert [fc.name for fc in head.fcs] == ["fc6", "fc7"]
    assert [dropout.rate for dropout in head.dropouts] == [0.5, 0.5]


@pytest.fixture(scope="module")
def vgg16_weights_file(tmp_path_factory):
    """A no-top VGG16 weights file as a user would save it from keras.applications."""
    source = keras.applications.VGG16(include_top=False, weights=None, input_shape=(None, None, 3))
    path = str(tmp_path_factory.mktemp("vgg16") / "vgg16_no_top.weights.h5")
    source.save_weights(path)
    return source, path


def test_vgg16_loads_a_weights_file_and_freezes_conv1_conv2(vgg16_weights_file):
    source, path = vgg16_weights_file

    backbone = build_backbone("vgg16", weights=path)

    assert backbone.fc_weights is None  # a no-top file has no fc1/fc2
    features = backbone.features
    np.testing.assert_array_equal(
        features.get_layer("block3_conv1").kernel.numpy(),
        source.get_layer("block3_conv1").kernel.numpy(),
    )
    frozen = ["block1_conv1", "block1_conv2", "block2_conv1", "block2_conv2"]
    assert backbone.frozen_layers == tuple(frozen)
    conv_layers = [layer for layer in features.layers if isinstance(layer, keras.layers.Conv2D)]
    assert [layer.name for layer in conv_layers if not layer.trainable] == frozen
    assert conv_layers[4].name == "block3_conv1" and conv_layers[4].trainable
    assert all(layer.trainable for layer in conv_layers[4:])


def test_set_trainable_keeps_the_paper_frozen_layers_frozen(vgg16_weights_file):
    backbone = build_backbone("vgg16", weights=vgg16_weights_file[1])
    features = backbone.features

    backbone.set_trainable(False)
    assert not any(layer.trainable for layer in features.layers if layer.weights)

    backbone.set_trainable(True)
    assert not features.get_layer("block2_conv2").trainable
    assert features.get_layer("block3_conv1").trainable


def test_freeze_until_choices(vgg16_weights_file, backbones):
    path = vgg16_weights_file[1]

    assert build_backbone("vgg16", weights=path, freeze_until=None).frozen_layers == ()
    assert build_backbone("vgg16", weights=path, freeze_until="block1_pool").frozen_layers == (
        "block1_conv1",
        "block1_conv2",
    )
    # Random init: nothing learned to protect, so the default freezes nothing.
    assert backbones["vgg16"].frozen_layers == ()
    assert backbones["tiny"].frozen_layers == ()


def test_resnet50_batchnorm_is_frozen_and_in_inference_mode(backbones):
    backbone = backbones["resnet50"]
    batch_norms = [
        layer
        for layer in backbone.features.layers
        if isinstance(layer, keras.layers.BatchNormalization)
    ]
    images = pixels((1, 32, 32, 3))

    assert (
        len(batch_norms) == 1 + 3 * (3 + 4 + 6) + 3
    )  # conv1, 13 blocks of 3, 3 shortcut BNs up to C4
    assert not any(layer.trainable for layer in batch_norms)
    assert set(backbone.frozen_layers) == {layer.name for layer in batch_norms}
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(backbone.features(images, training=True)),
        keras.ops.convert_to_numpy(backbone.features(images, training=False)),
        rtol=1e-5,
        atol=1e-5,
    )
    assert backbone.features.get_layer("conv1_conv").trainable
    assert backbone.features.get_layer("conv3_block1_1_conv").trainable


def test_resnet50_freeze_until_conv2_freezes_conv1_and_conv2_x():
    backbone = build_backbone("resnet50", freeze_until="conv2_block3_out")
    features = backbone.features

    assert not features.get_layer("conv1_conv").trainable
    assert not features.get_layer("conv2_block3_3_conv").trainable
    assert features.get_layer("conv3_block1_1_conv").trainable
    assert not features.get_layer("conv3_block1_1_bn").trainable


def _known(shape, scale):
    return (np.arange(np.prod(shape), dtype=np.float32) % 97 * scale).reshape(shape)


@pytest.fixture(scope="module")
def mobilenet_h5(tmp_path_factory):
    """A legacy Keras .h5 with the layout of Keras' ImageNet MobileNet file (alpha 0.25, no
    top, the name ``build_backbone`` checks) and known values in conv1, conv_pw_11 and
    conv_pw_11_bn: (path, {layer: (attribute, values)})."""
    net = keras.applications.MobileNet(
        alpha=0.25, include_top=False, weights=None, input_shape=(224, 224, 3)
    )
    known = {
        "conv1": ("kernel", 0.001),
        "conv_pw_11": ("kernel", 0.002),
        "conv_pw_11_bn": ("moving_mean", 0.01),
    }
    values = {}
    for layer, (attribute, scale) in known.items():
        variable = getattr(net.get_layer(layer), attribute)
        values[layer] = (attribute, _known(tuple(variable.shape), scale))
        variable.assign(values[layer][1])
    path = tmp_path_factory.mktemp("weights") / "mobilenet_2_5_224_tf_no_top.h5"
    with h5py.File(path, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, net)
    return str(path), values


def test_mobilenet_loads_a_keras_imagenet_layout_file(mobilenet_h5):
    path, values = mobilenet_h5
    backbone = build_backbone("mobilenet", weights=path)
    features = backbone.features

    conv1_kernel = values["conv1"][1]
    pw11_kernel = values["conv_pw_11"][1]
    pw11_moving_mean = values["conv_pw_11_bn"][1]
    np.testing.assert_array_equal(features.get_layer("conv1").kernel.numpy(), conv1_kernel)
    np.testing.assert_array_equal(features.get_layer("conv_pw_11").kernel.numpy(), pw11_kernel)
    np.testing.assert_array_equal(
        features.get_layer("conv_pw_11_bn").moving_mean.numpy(), pw11_moving_mean
    )
    assert not features.get_layer("conv_pw_3").trainable
    assert features.get_layer("conv_dw_4").trainable
    assert not features.get_layer("conv_pw_11_bn").trainable
    assert tuple(features(pixels((1, 64, 96, 3))).shape) == (1, 4, 6, 128)


def test_tiny_weights_file_round_trip(backbones, tmp_path):
    path = str(tmp_path / "tiny.weights.h5")
    backbones["tiny"].features.save_weights(path)
    images = pixels((1, 32, 48, 3))

    restored = build_backbone("tiny", weights=path)

    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(restored.features(images)),
        keras.ops.convert_to_numpy(backbones["tiny"].features(images)),
    )


def test_tiny_forward_gives_a_stride_16_map(backbones):
    # Its speed is measured in benchmarks/, not asserted here (wall clock depends on the load).
    feature_map = backbones["tiny"].features.predict_on_batch(pixels((2, 320, 480, 3)))
    assert feature_map.shape == (2, 20, 30, 128)


def test_unknown_backbone_name_raises_naming_it():
    with pytest.raises(ValueError, match="'resnet18'"):
        build_backbone("resnet18")
    with pytest.raises(ValueError, match="'resnet18'"):
        preprocessing_layer("resnet18")


def test_bad_weights_raise_naming_them(tmp_path):
    missing = str(tmp_path / "missing.h5")
    with pytest.raises(ValueError, match="missing.h5"):
        build_backbone("tiny", weights=missing)
    with pytest.raises(ValueError, match="'imagenet21k'"):
        build_backbone("tiny", weights="imagenet21k")
    with pytest.raises(ValueError, match="imagenet"):
        build_backbone("tiny", weights="imagenet")
    not_h5 = tmp_path / "weights.ckpt"
    not_h5.write_text("")
    with pytest.raises(ValueError, match="weights.ckpt"):
        build_backbone("tiny", weights=str(not_h5))


def test_weights_file_of_another_backbone_raises_naming_it(mobilenet_h5):
    with pytest.raises(ValueError, match="mobilenet_2_5_224_tf_no_top.h5"):
        build_backbone("tiny", weights=mobilenet_h5[0])


def test_unknown_freeze_until_layer_raises_naming_it():
    with pytest.raises(ValueError, match="'block9_conv1'"):
        build_backbone("tiny", freeze_until="block9_conv1")


@pytest.mark.parametrize(
    "channels, stem", [((16, 32, 64, 128), 2), ((16, 32, 96), 4), ((8, 24), 8)]
)
def test_tiny_channels_keep_stride_16_with_a_wider_stem(channels, stem):
    backbone = build_backbone("tiny", tiny_channels=channels)
    assert backbone.stride == 16
    features = backbone.features(np.zeros([1, 512, 320, 3], np.float32))
    assert tuple(features.shape) == (1, 32, 20, channels[-1])
    first = backbone.features.get_layer("stage1_down")
    assert first.strides == (stem, stem)
    # Stride 2: the overlapping 3x3 conv; wider: a non-overlapping s x s "patchify" conv.
    assert first.kernel_size == ((3, 3) if stem == 2 else (stem, stem))


@pytest.mark.parametrize("channels", [(16,), (8, 8, 8, 8, 8), (16, 0, 32)])
def test_tiny_channels_out_of_range(channels):
    with pytest.raises(ValueError, match="tiny_channels"):
        build_backbone("tiny", tiny_channels=channels)
