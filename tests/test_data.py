"""The offline data layer: built-in sets, splits, subsets, normalisation, augmentation, ImageFolder, errors."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest
import torch
from PIL import Image

from statelayers.data import images as D
from statelayers.data.images import DATASETS, DataInfo, DatasetMissing, build_datasets, load_digits, load_fashion_mnist

INSTALL = "apt-get install -y dataset-fashion-mnist"


def fashion_or_skip():
    try:
        return load_fashion_mnist()
    except DatasetMissing:
        pytest.skip(f"Fashion-MNIST is not installed ({INSTALL})")


def stack(ds, n=None):
    idx = range(len(ds)) if n is None else torch.randperm(len(ds), generator=torch.Generator().manual_seed(0))[:n]
    xs, ys = zip(*(ds[int(i)] for i in idx))
    return torch.stack(xs), torch.tensor(ys)


def test_datasets_names_the_builtins():
    assert set(DATASETS) == {"digits", "fashion_mnist"}


# ----------------------------------------------------------------------------------------------- digits


def test_digits_shapes_dtypes_labels():
    tr, ev, info = build_datasets("digits")
    assert isinstance(info, DataInfo)
    assert (info.name, info.num_classes, info.in_chans, info.img_size) == ("digits", 10, 1, 8)
    assert info.classes == [str(i) for i in range(10)]
    assert (len(tr), len(ev)) == (info.train_size, info.eval_size) == (1438, 359)
    x, y = tr[0]
    assert x.shape == (1, 8, 8) and x.dtype == torch.float32 and type(y) is int
    _, ys = stack(ev)
    assert set(ys.tolist()) == set(range(10))


def test_digits_split_is_fixed_disjoint_and_stratified():
    tr, ev, info = build_datasets("digits", seed=0)
    tr2, ev2, info2 = build_datasets("digits", seed=7)  # the run seed does not move the split (or the stats)
    assert torch.equal(tr.indices, tr2.indices) and torch.equal(ev.indices, ev2.indices) and info == info2
    assert not torch.equal(*(D.stratified_split(tr.targets, 0.2, s)[1] for s in (0, 1)))  # the helper is seeded
    assert not set(tr.indices.tolist()) & set(ev.indices.tolist())
    assert sorted(tr.indices.tolist() + ev.indices.tolist()) == list(range(1797))
    # the labels follow the source images, and each class is split about 80/20
    _, y = load_digits()
    assert torch.equal(tr.targets, y[tr.indices]) and torch.equal(ev.targets, y[ev.indices])
    frac = ev.targets.bincount(minlength=10).float() / y.bincount(minlength=10).float()
    assert ((frac - 0.2).abs() < 0.01).all()


def test_digits_normalisation_is_zero_mean_unit_std_on_train():
    tr, ev, info = build_datasets("digits")
    x, _ = stack(tr)
    assert abs(x.mean().item()) < 1e-4 and abs(x.std(unbiased=False).item() - 1) < 1e-4
    xe, _ = stack(ev)  # the held-out split uses the training statistics: close, not exact
    assert abs(xe.mean().item()) < 0.1 and abs(xe.std().item() - 1) < 0.1


def test_subset_is_class_balanced_and_deterministic():
    tr, ev, info = build_datasets("digits", subset=105, seed=3)
    counts = tr.targets.bincount(minlength=10)
    assert len(tr) == info.train_size == 105 and counts.max() - counts.min() <= 1 and counts.min() == 10
    assert len(ev) == 359  # eval split untouched
    again, _, _ = build_datasets("digits", subset=105, seed=3)
    other, _, _ = build_datasets("digits", subset=105, seed=4)
    assert torch.equal(tr.indices, again.indices) and not torch.equal(tr.indices, other.indices)
    full, _, _ = build_datasets("digits", seed=3)
    assert set(tr.indices.tolist()) <= set(full.indices.tolist())  # a subset of the same training split
    with pytest.raises(ValueError, match="subset"):
        build_datasets("digits", subset=5000)


def test_upsampling_and_augmentation_keep_shape_and_change_images():
    plain, _, info = build_datasets("digits", img_size=16)
    assert info.img_size == 16 and plain[0][0].shape == (1, 16, 16)
    torch.manual_seed(0)
    aug, ev, _ = build_datasets("digits", img_size=16, train_aug={"crop_pad": 3, "hflip": 0.5})
    xs = [aug[i][0] for i in range(20)]
    assert all(x.shape == (1, 16, 16) for x in xs)
    assert sum(not torch.allclose(x, plain[i][0]) for i, x in enumerate(xs)) >= 10
    assert torch.equal(ev[0][0], build_datasets("digits", img_size=16)[1][0][0])  # eval is never augmented
    flipped, _, _ = build_datasets("digits", train_aug={"hflip": 1.0})
    base, _, _ = build_datasets("digits")
    assert torch.equal(flipped[7][0], base[7][0].flip(-1))
    with pytest.raises(ValueError, match="auto_augment"):
        build_datasets("digits", train_aug={"auto_augment": "rand-m9-mstd0.5-inc1"})
    with pytest.raises(ValueError, match="hflip"):
        build_datasets("digits", train_aug={"hflip": 2})


# ----------------------------------------------------------------------------------------------- Fashion-MNIST


def test_fashion_mnist_shapes_labels_and_normalisation():
    fashion_or_skip()
    tr, ev, info = build_datasets("fashion-mnist")
    assert (info.name, info.num_classes, info.in_chans, info.img_size) == ("fashion_mnist", 10, 1, 28)
    assert (len(tr), len(ev), info.train_size, info.eval_size) == (60000, 10000, 60000, 10000)
    assert info.classes[0] == "T-shirt/top" and info.classes[-1] == "Ankle boot"
    x, y = tr[123]
    assert x.shape == (1, 28, 28) and x.dtype == torch.float32 and 0 <= y < 10
    xs, ys = stack(tr, 3000)
    assert abs(xs.mean().item()) < 0.03 and abs(xs.std().item() - 1) < 0.03
    assert ev.targets.bincount().tolist() == [1000] * 10


def test_fashion_mnist_subset_and_resize():
    fashion_or_skip()
    tr, ev, info = build_datasets("fashion_mnist", subset=200, img_size=32, train_aug={"crop_pad": 4, "hflip": 0.5})
    assert tr.targets.bincount().tolist() == [20] * 10 and info.train_size == 200 and len(ev) == 10000
    assert tr[0][0].shape == ev[0][0].shape == (1, 32, 32)


def write_idx(path, arr: np.ndarray, truncate: int = 0):
    raw = bytes([0, 0, 8, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.astype(np.uint8).tobytes()
    with gzip.open(path, "wb") as f:
        f.write(raw[: len(raw) - truncate])


def fake_fashion(root, truncate_train_images=0):
    rng = np.random.default_rng(0)
    write_idx(root / "train-images-idx3-ubyte.gz", rng.integers(0, 256, (20, 28, 28)), truncate_train_images)
    write_idx(root / "train-labels-idx1-ubyte.gz", np.arange(20) % 10)
    write_idx(root / "t10k-images-idx3-ubyte.gz", rng.integers(0, 256, (10, 28, 28)))
    write_idx(root / "t10k-labels-idx1-ubyte.gz", np.arange(10))


def test_corrupt_idx_files_raise_value_error(tmp_path, monkeypatch):
    monkeypatch.setenv("STATELAYERS_FASHION_MNIST", str(tmp_path))
    fake_fashion(tmp_path)
    tr, ev, info = build_datasets("fashion_mnist")  # the well-formed fake loads
    assert (len(tr), len(ev)) == (20, 10)
    fake_fashion(tmp_path, truncate_train_images=100)  # data shorter than the header says
    with pytest.raises(ValueError, match="truncated"):
        build_datasets("fashion_mnist")
    with pytest.raises(ValueError, match="truncated"):
        load_fashion_mnist(tmp_path)
    fake_fashion(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(b"not gzip at all")
    with pytest.raises(ValueError, match="gzip"):
        build_datasets("fashion_mnist")
    gz = gzip.compress(bytes([0, 0, 8, 1]) + struct.pack(">I", 10) + bytes(10))
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(gz[: len(gz) // 2])  # cut-off gzip stream
    with pytest.raises(ValueError):
        build_datasets("fashion_mnist")
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.arange(7))  # 7 labels for 10 images
    with pytest.raises(ValueError, match="do not match"):
        build_datasets("fashion_mnist")
    with gzip.open(tmp_path / "t10k-labels-idx1-ubyte.gz", "wb") as f:
        f.write(bytes([0, 0, 8, 3, 0, 0]))  # header cut inside the dimensions
    with pytest.raises(ValueError, match="truncated"):
        build_datasets("fashion_mnist")


def test_missing_datasets_name_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("STATELAYERS_FASHION_MNIST", str(tmp_path / "nowhere"))
    with pytest.raises(DatasetMissing, match=INSTALL):
        build_datasets("fashion_mnist")
    with pytest.raises(DatasetMissing, match=INSTALL):
        load_fashion_mnist(tmp_path)
    with pytest.raises(DatasetMissing, match="train"):
        build_datasets(str(tmp_path / "imagenet"))
    (tmp_path / "tree").mkdir()
    with pytest.raises(DatasetMissing, match="train/"):
        build_datasets(str(tmp_path / "tree"))
    (tmp_path / "tree" / "train" / "a").mkdir(parents=True)
    with pytest.raises(DatasetMissing, match="val/"):
        build_datasets(str(tmp_path / "tree"))
    assert issubclass(DatasetMissing, FileNotFoundError)


def test_unknown_names_list_the_accepted_values():
    with pytest.raises(ValueError, match="digits.*fashion_mnist.*ImageFolder"):
        build_datasets("cifar10")


# ----------------------------------------------------------------------------------------------- ImageFolder


@pytest.fixture(scope="module")
def folder_tree(tmp_path_factory):
    """3 classes of real digits saved as PNG, half grayscale ("L") and half RGB, with `validation/`
    missing one class."""
    root = tmp_path_factory.mktemp("imagefolder")
    x, y = load_digits()
    names = {0: "zero", 3: "three", 7: "seven"}
    for split, per_class, classes in (("train", 6, (0, 3, 7)), ("validation", 2, (0, 7))):
        for c in classes:
            (root / split / names[c]).mkdir(parents=True)
            idx = torch.nonzero(y == c).flatten()[: per_class] if split == "train" else \
                torch.nonzero(y == c).flatten()[-per_class:]
            for j, i in enumerate(idx.tolist()):
                img = Image.fromarray(x[i].numpy(), mode="L").resize((24, 20))  # non-square on purpose
                if j % 2:
                    img = img.convert("RGB")
                img.save(root / split / names[c] / f"{i}.png")
    return root, names


def test_imagefolder_loads_classes_and_shapes(folder_tree):
    root, names = folder_tree
    tr, ev, info = build_datasets(str(root), img_size=32)
    assert info.name == "imagefolder" and info.classes == sorted(names.values())
    assert (info.num_classes, info.in_chans, info.img_size) == (3, 3, 32)
    assert (info.train_size, info.eval_size) == (18, 4)
    assert info.mean == pytest.approx((0.485, 0.456, 0.406)) and info.std == pytest.approx((0.229, 0.224, 0.225))
    # validation lacks "three" but keeps the training indices of "seven" and "zero"
    assert ev.classes == tr.classes and sorted(set(ev.targets)) == [tr.class_to_idx["seven"], tr.class_to_idx["zero"]]
    for ds in (tr, ev):
        for i in range(len(ds)):
            x, yy = ds[i]
            assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and 0 <= yy < 3
    # no train_aug: training images are transformed exactly like eval images
    tr2, _, _ = build_datasets(root, img_size=32)
    assert torch.equal(tr[0][0], tr2[0][0])


def test_imagefolder_with_randaugment_and_subset(folder_tree):
    root, _ = folder_tree
    aug = {"scale": (0.5, 1.0), "hflip": 0.5, "auto_augment": "rand-m9-mstd0.5-inc1", "re_prob": 0.25,
           "interpolation": "bicubic", "crop_pct": 0.9}
    plain, _, _ = build_datasets(root, img_size=32)
    torch.manual_seed(0)
    tr, ev, info = build_datasets(root, img_size=32, train_aug=aug, subset=6, seed=1)
    assert info.train_size == len(tr) == 6
    assert sorted(tr.dataset.targets[i] for i in tr.indices) == [0, 0, 1, 1, 2, 2]
    changed = 0
    for i in range(len(tr)):
        x, _ = tr[i]
        assert x.shape == (3, 32, 32)
        changed += not torch.allclose(x, plain[tr.indices[i]][0])
    assert changed >= 4
    assert ev[0][0].shape == (3, 32, 32)
    with pytest.raises(ValueError, match="crop_pad"):  # crop_pad applies to ImageFolder data too, >= 0
        build_datasets(root, train_aug={"crop_pad": -1})


def test_imagefolder_rejects_val_classes_unknown_to_train(tmp_path):
    for split, cls in (("train", "a"), ("val", "a"), ("val", "b")):
        (tmp_path / split / cls).mkdir(parents=True)
        Image.new("L", (8, 8), 128).save(tmp_path / split / cls / "x.png")
    with pytest.raises(ValueError, match="b"):
        build_datasets(tmp_path, img_size=8)


def test_fashion_root_is_read_at_call_time(monkeypatch, tmp_path):
    monkeypatch.setenv("STATELAYERS_FASHION_MNIST", str(tmp_path))
    assert D.fashion_mnist_root(None) == tmp_path
    monkeypatch.delenv("STATELAYERS_FASHION_MNIST")
    assert D.fashion_mnist_root(None) == D.FASHION_MNIST_DIR
