"""Layers -> data folder (crl_napari.layers_dataset), without a display: what the Train widget writes when it
trains from the viewer's layers, read back by the engine's own loader."""

from __future__ import annotations

import dataclasses

import imageio.v3 as iio
import numpy as np
import pytest

from crl_napari.data import load_dataset, read_mask
from crl_napari.layers_dataset import DataWritten, layers_data_dir, write_layers_dataset
from crl_napari.phantoms import make_phantom


def _stacks(n: int = 4, size: int = 32):
    pairs = [make_phantom(seed, size) for seed in range(n)]
    return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs]).astype(np.int32)


def test_a_float_stack_and_its_labels_become_a_data_folder_the_engine_loads(tmp_path):
    images, masks = _stacks()
    floats = images.astype(np.float32) / 255 * 3.0 - 1.0  # a float layer of any range
    dest = write_layers_dataset(floats, masks, tmp_path / "run-data", name="chest x-ray")
    assert dest == tmp_path / "run-data"
    ds = load_dataset(dest, size=32)
    assert ds.ids == [f"chest_x-ray_{i:04d}" for i in range(4)]
    stored = iio.imread(dest / "images" / "chest_x-ray_0002.png")  # the file as written
    assert stored.dtype == np.uint16 and stored.min() == 0 and stored.max() == 65535  # scaled per image
    assert np.corrcoef(stored.ravel(), images[2].ravel())[0, 1] > 0.999
    np.testing.assert_array_equal(read_mask(dest / "masks" / "chest_x-ray_0002.png") > 0, masks[2] > 0)


def test_integer_images_keep_their_values_and_plain_ids_name_the_files(tmp_path):
    images, masks = _stacks(3)
    ids = ["CHNCXR_0001_0", "CHNCXR_0002_1", "case.3"]
    dest = write_layers_dataset(images.astype(np.uint8), masks, tmp_path / "d", ids=ids)
    assert sorted(p.stem for p in (dest / "images").iterdir()) == sorted(ids)
    np.testing.assert_array_equal(iio.imread(dest / "images" / "case.3.png"), images[2].astype(np.uint8))


@pytest.mark.parametrize("ids", [["../escape", "b", "c"], ["a", "a", "c"], ["a", "b"], [1, 2, 3],
                                 "abc", [".hidden", "b", "c"], [["a"], "b", "c"]])
def test_ids_from_a_layers_metadata_that_are_not_plain_file_stems_are_not_used(tmp_path, ids):
    images, masks = _stacks(3)
    dest = write_layers_dataset(images, masks, tmp_path / "d", name="xray", ids=ids)
    assert sorted(p.name for p in (dest / "images").iterdir()) == [f"xray_{i:04d}.png" for i in range(3)]
    assert not (tmp_path / "escape.png").exists()


def test_an_rgb_stack_is_written_as_grey(tmp_path):
    images, masks = _stacks(2)
    rgb = np.repeat(images[..., None], 3, axis=-1).astype(np.uint8)
    dest = write_layers_dataset(rgb, masks, tmp_path / "d", rgb=True)
    grey = iio.imread(dest / "images" / "image_0001.png")
    assert grey.shape == (32, 32) and np.corrcoef(grey.ravel(), images[1].ravel())[0, 1] > 0.999


def test_bad_layers_are_refused_with_one_line_and_nothing_is_written_over(tmp_path):
    images, masks = _stacks(3)
    with pytest.raises(ValueError, match="differ in shape"):
        write_layers_dataset(images, masks[:, :16], tmp_path / "a")
    with pytest.raises(ValueError, match="at least 2 images"):
        write_layers_dataset(images[0], masks[0], tmp_path / "b")
    with pytest.raises(ValueError, match="2-D images"):
        write_layers_dataset(np.zeros(5), np.zeros(5), tmp_path / "c")
    assert not any((tmp_path / n).exists() for n in "abc")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="not empty"):
        write_layers_dataset(images, masks, mine)
    assert [p.name for p in mine.iterdir()] == ["notes.txt"] and (mine / "notes.txt").read_text() == "keep me"


def test_the_data_folder_sits_beside_the_run_and_the_event_is_typed(tmp_path):
    assert layers_data_dir(tmp_path / "runs" / "lungs") == tmp_path / "runs" / "lungs-data"
    ev = DataWritten(tmp_path / "d")
    with pytest.raises(dataclasses.FrozenInstanceError):
        ev.path = tmp_path  # type: ignore[misc]
