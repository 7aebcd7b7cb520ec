"""Issue 16 item 8: ImageFolder trees with the small models. The `small` recipe's padded crop works on them and
`--train-aug crop_pad=0` removes it; grayscale trees stay one channel; the image size comes from the data; the
normalisation statistics follow the documented rule (the model's own ImageNet mean/std on RGB data for
ImageNet-style models, otherwise those of the training images), checked against numpy on the same pixels."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from statelayers.cli import main
from statelayers.data.images import build_datasets, load_digits

yaml = pytest.importorskip("yaml")

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def digits_by_class(classes=(0, 1, 2), per_class=16):
    """{class: [8x8 uint8 arrays]} of scikit-learn's digits, in file order."""
    x, y = load_digits()
    return {c: [x[i].numpy() for i in np.flatnonzero(y.numpy() == c)[:per_class]] for c in classes}


def write_tree(root, arrays: dict, *, n_train: int, mode: str = "L", size: int | None = None):
    """PATH/train/c<k>/<i>.png and PATH/val/...: the first n_train arrays of each class for training, the rest for
    validation. ``mode="RGB"``: a colour image whose channels are the digit, its negative and a ramp.
    Returns the training pixels (uint8, (N, H, W[, 3])) exactly as written."""
    written = []
    for c, arrs in arrays.items():
        for i, a in enumerate(arrs):
            split = "train" if i < n_train else "val"
            img = Image.fromarray(a, mode="L")
            if size is not None:
                img = img.resize((size, size), Image.NEAREST)
            if mode == "RGB":
                g = np.asarray(img)
                ramp = np.broadcast_to(np.linspace(0, 255, g.shape[1]).astype(np.uint8), g.shape)
                img = Image.fromarray(np.stack([g, 255 - g, ramp], axis=-1), mode="RGB")
            d = root / split / f"c{c}"
            d.mkdir(parents=True, exist_ok=True)
            img.save(d / f"{i:03d}.png")
            if split == "train":
                written.append(np.asarray(img))
    return np.stack(written)


def numpy_stats(pixels: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-channel mean and population std of uint8 pixels scaled to [0, 1]."""
    x = pixels.astype(np.float64) / 255.0
    x = x.reshape(-1, 1 if x.ndim == 3 else x.shape[-1])
    return x.mean(axis=0).tolist(), x.std(axis=0).tolist()


@pytest.fixture(scope="module")
def gray_tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("gray")
    pixels = write_tree(root, digits_by_class(), n_train=12)  # 36 train / 12 val, 8x8 grayscale
    return root, pixels


def train_cli(args, tmp_path, capsys, name="run"):
    rc = main(["train", "--model", "s6la_cifar_resnet20", "--epochs", "1", "--batch-size", "12", "--quiet",
               "--output", str(tmp_path), "--name", name, *args])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    run = tmp_path / name
    return yaml.safe_load((run / "config.yaml").read_text()), run


def test_gray_tree_trains_with_the_small_recipe_one_channel_at_its_own_size(gray_tree, tmp_path, capsys):
    root, pixels = gray_tree
    cfg, run = train_cli(["--data", str(root)], tmp_path, capsys)
    assert cfg["recipe"] == "small" and cfg["train_aug"]["crop_pad"] == 2  # the recipe's padded crop, on ImageFolder
    info = cfg["data_info"]
    assert (info["name"], info["num_classes"], info["in_chans"], info["img_size"]) == ("imagefolder", 3, 1, 8)
    assert (info["train_size"], info["eval_size"]) == (36, 12)
    mean, std = numpy_stats(pixels)
    assert info["mean"] == pytest.approx(mean, rel=1e-9) and info["std"] == pytest.approx(std, rel=1e-9)
    assert not np.allclose(info["mean"], IMAGENET[0][:1])
    from safetensors.torch import load_file

    assert load_file(run / "best.safetensors")["conv1.weight"].shape[1] == 1  # the model takes one channel


def test_crop_pad_zero_removes_the_padded_crop(gray_tree, tmp_path, capsys):
    root, _ = gray_tree
    cfg, _ = train_cli(["--data", str(root), "--train-aug", "crop_pad=0", "hflip=0"], tmp_path, capsys)
    assert cfg["train_aug"] == {"crop_pad": 0, "hflip": 0}
    # without augmentation a training image is exactly its evaluation transform
    tr, ev, _ = build_datasets(str(root), train_aug=cfg["train_aug"], norm="data")
    for i in range(0, len(tr), 5):
        assert torch.equal(tr[i][0], ev.transform(ev.loader(tr.samples[i][0])))


def test_crop_pad_is_a_black_padded_shift_of_the_image(gray_tree):
    root, _ = gray_tree
    plain, _, info = build_datasets(str(root), norm="data")
    padded, _, _ = build_datasets(str(root), train_aug={"crop_pad": 2}, norm="data")
    mean, std = info.mean[0], info.std[0]
    torch.manual_seed(0)
    moved = 0
    for i in range(len(plain)):
        x = plain[i][0][0] * std + mean  # back to [0, 1]
        y = padded[i][0][0] * std + mean
        big = torch.nn.functional.pad(x, (2, 2, 2, 2))  # zero-padded by 2
        shifts = [(dy, dx) for dy in range(5) for dx in range(5)
                  if torch.allclose(big[dy:dy + 8, dx:dx + 8], y, atol=1e-6)]
        assert shifts, f"image {i} is not a padded crop of the original"
        moved += (2, 2) not in shifts
    assert moved >= len(plain) // 2


def test_rgb_tree_keeps_three_channels_and_its_own_statistics_for_small_models(tmp_path):
    from statelayers.engine import TrainConfig
    from statelayers.engine.tasks import build_data

    pixels = write_tree(tmp_path, digits_by_class(per_class=6), n_train=4, mode="RGB", size=12)
    cfg = TrainConfig(model="s6la_cifar_resnet20", data=str(tmp_path)).resolved()
    data = build_data(cfg)
    info = data.info
    assert (info.in_chans, info.img_size) == (3, 12) and data.model_kwargs["in_chans"] == 3
    mean, std = numpy_stats(pixels)
    assert info.mean == pytest.approx(mean, rel=1e-9) and info.std == pytest.approx(std, rel=1e-9)
    x, _ = data.train[0]
    assert x.shape == (3, 12, 12)
    # an ImageNet-style model on the same RGB tree gets ImageNet's statistics (its timm default); the size is the
    # data's as long as the recipe sets none
    resnet = build_data(TrainConfig(model="s6la_resnet18", data=str(tmp_path)).resolved()).info
    assert (resnet.in_chans, resnet.img_size) == (3, 12)
    assert resnet.mean == pytest.approx(IMAGENET[0]) and resnet.std == pytest.approx(IMAGENET[1])
    assert build_data(TrainConfig(model="s6la_resnet18", data=str(tmp_path), recipe="resnet").resolved()).info \
        .img_size == 224


def test_gray_tree_under_an_imagenet_model_is_one_channel_with_its_own_statistics(gray_tree):
    from statelayers.engine import TrainConfig
    from statelayers.engine.tasks import build_data

    root, pixels = gray_tree
    info = build_data(TrainConfig(model="s6la_resnet18", data=str(root), recipe="resnet").resolved()).info
    mean, std = numpy_stats(pixels)
    assert (info.in_chans, info.img_size) == (1, 224)
    assert info.mean == pytest.approx(mean, rel=1e-9) and info.std == pytest.approx(std, rel=1e-9)


def test_in_chans_from_model_kwargs_wins(gray_tree):
    root, pixels = gray_tree
    tr, ev, info = build_datasets(str(root), in_chans=3, norm="data")
    mean, std = numpy_stats(pixels)  # the gray channel three times
    assert info.in_chans == 3 and info.mean == pytest.approx(mean * 3) and info.std == pytest.approx(std * 3)
    x, _ = tr[0]
    assert x.shape == (3, 8, 8) and torch.equal(x[0], x[1]) and torch.equal(x[1], x[2])
    d_tr, _, d_info = build_datasets("digits", in_chans=3)  # the tensor sets too
    assert d_info.in_chans == 3 and d_tr[0][0].shape == (3, 8, 8) and len(d_info.mean) == 3
    with pytest.raises(ValueError, match="in_chans=2"):
        build_datasets(str(root), in_chans=2)


def test_mixed_sizes_take_the_median_shorter_side(tmp_path):
    for split, cls, size in (("train", "a", (10, 10)), ("train", "a", (12, 30)), ("train", "b", (40, 14)),
                             ("train", "b", (16, 16)), ("train", "b", (20, 18)), ("val", "a", (9, 9))):
        d = tmp_path / split / cls
        d.mkdir(parents=True, exist_ok=True)
        Image.new("L", size, 100).save(d / f"{size[0]}x{size[1]}.png")
    tr, ev, info = build_datasets(tmp_path)
    assert info.img_size == 14  # shorter sides 10, 12, 14, 16, 18
    assert info.std == (1.0,)  # constant images: no spread, std 1 instead of a division by zero
    assert all(tr[i][0].shape == (1, 14, 14) for i in range(len(tr))) and ev[0][0].shape == (1, 14, 14)
