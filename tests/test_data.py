"""data.py against real files written to disk (PNG, JPEG, BMP, TIFF, DICOM) and real folder mistakes."""

from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pydicom
import pytest
import tifffile
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from crl_napari.data import (
    Case,
    DataError,
    Dataset,
    load_dataset,
    read_image,
    read_mask,
    resize_image,
    resize_mask,
    zscore,
)

SHENZHEN = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "shenzhen"


# ----------------------------------------------------------------------------------------- helpers


def noise_image(shape=(32, 32), seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


def blob_mask(shape=(32, 32), value=255, background=0, dtype=np.uint8) -> np.ndarray:
    m = np.full(shape, background, dtype)
    h, w = shape
    m[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4] = value
    return m


def make_pair(root: Path, cid: str, image=None, mask=None, img_ext="png", mask_ext="png", mask_suffix=""):
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    image = noise_image() if image is None else image
    mask = blob_mask(image.shape[:2]) if mask is None else mask
    ip = root / "images" / f"{cid}.{img_ext}"
    mp = root / "masks" / f"{cid}{mask_suffix}.{mask_ext}"
    iio.imwrite(ip, image)
    iio.imwrite(mp, mask)
    return ip, mp


def write_dicom(path: Path, stored: np.ndarray, photometric="MONOCHROME2", **attrs) -> Path:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "CR"
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    for key, value in attrs.items():
        setattr(ds, key, value)
    ds.PixelData = stored.astype("<u2").tobytes()
    if int(pydicom.__version__.split(".")[0]) >= 3:
        ds.save_as(path, enforce_file_format=True)
    else:  # pragma: no cover - pydicom 2.x
        ds.is_little_endian, ds.is_implicit_VR = True, False
        ds.save_as(path, write_like_original=False)
    return path


def linear_window(x, center, width):
    return np.clip((x - (center - 0.5)) / (width - 1) + 0.5, 0, 1)


# ------------------------------------------------------------------------------------- read_image


def test_rgb_and_rgba_become_luminance(tmp_path):
    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[..., 0] = 255  # pure red
    rgb[4:, :, :] = 255  # white bottom half
    iio.imwrite(tmp_path / "rgb.png", rgb)
    out = read_image(tmp_path / "rgb.png")
    assert out.dtype == np.float32 and out.shape == (8, 8)
    np.testing.assert_allclose(out[0, 0], 0.2125, atol=1e-4)
    np.testing.assert_allclose(out[7, 7], 1.0, atol=1e-4)
    rgba = np.concatenate([rgb, np.full((8, 8, 1), 7, np.uint8)], axis=-1)
    iio.imwrite(tmp_path / "rgba.png", rgba)
    np.testing.assert_allclose(read_image(tmp_path / "rgba.png"), out, atol=1e-6)


def test_16bit_png_and_tiff_scaled_by_dtype_range(tmp_path):
    a = np.array([[0, 32768], [65535, 1000]], np.uint16)
    iio.imwrite(tmp_path / "a.png", a)
    tifffile.imwrite(tmp_path / "a.tif", a)
    expected = a.astype(np.float64) / 65535
    for name in ("a.png", "a.tif"):
        out = read_image(tmp_path / name)
        assert out.dtype == np.float32
        np.testing.assert_allclose(out, expected, atol=1e-6)


def test_float_tiff_min_max_and_rgb_tiff(tmp_path):
    f = np.array([[-2.0, 0.0], [2.0, 1.0]], np.float32)
    tifffile.imwrite(tmp_path / "f.tiff", f)
    np.testing.assert_allclose(read_image(tmp_path / "f.tiff"), [[0, 0.5], [1, 0.75]], atol=1e-6)
    rgb = np.zeros((4, 4, 3), np.uint16)
    rgb[..., 1] = 65535  # pure green
    tifffile.imwrite(tmp_path / "rgb.tif", rgb, photometric="rgb")
    np.testing.assert_allclose(read_image(tmp_path / "rgb.tif"), 0.7154, atol=1e-4)


def test_bmp_and_jpeg(tmp_path):
    img = noise_image((16, 16))
    iio.imwrite(tmp_path / "a.bmp", img)
    np.testing.assert_allclose(read_image(tmp_path / "a.bmp"), img / 255.0, atol=1e-6)
    smooth = np.tile(np.linspace(0, 255, 32).astype(np.uint8), (32, 1))
    iio.imwrite(tmp_path / "a.jpg", smooth, quality=95)
    assert np.abs(read_image(tmp_path / "a.jpg") - smooth / 255.0).max() < 0.05


def test_dicom_rescale_and_window(tmp_path):
    stored = np.array([[0, 100], [200, 300]], np.uint16)
    p = write_dicom(
        tmp_path / "w.dcm", stored, RescaleSlope=2, RescaleIntercept=-100, WindowCenter=200, WindowWidth=401
    )
    values = stored * 2.0 - 100  # -100, 100, 300, 500
    np.testing.assert_allclose(read_image(p), linear_window(values, 200, 401), atol=1e-6)


def test_dicom_multivalued_window_uses_first(tmp_path):
    stored = np.array([[0, 100], [200, 300]], np.uint16)
    p = write_dicom(tmp_path / "m.dcm", stored, WindowCenter=[150, 10], WindowWidth=[201, 2])
    np.testing.assert_allclose(read_image(p), linear_window(stored.astype(float), 150, 201), atol=1e-6)


def test_dicom_monochrome1_inverted(tmp_path):
    stored = np.array([[10, 20], [30, 50]], np.uint16)
    mono2 = read_image(write_dicom(tmp_path / "m2.dcm", stored))
    mono1 = read_image(write_dicom(tmp_path / "m1.dcm", stored, photometric="MONOCHROME1"))
    np.testing.assert_allclose(mono2, [[0, 0.25], [0.5, 1.0]], atol=1e-6)  # min-max without a window
    np.testing.assert_allclose(mono1, 1.0 - mono2, atol=1e-6)
    windowed = read_image(
        write_dicom(tmp_path / "w1.dcm", stored, photometric="MONOCHROME1", WindowCenter=30, WindowWidth=41)
    )
    np.testing.assert_allclose(windowed, 1.0 - linear_window(stored.astype(float), 30, 41), atol=1e-6)


def test_truncated_png_names_the_file(tmp_path):
    p = tmp_path / "cut.png"
    iio.imwrite(p, noise_image((64, 64)))
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="cut.png") as err:
        read_image(p)
    assert "cannot read image" in str(err.value)
    garbage = tmp_path / "junk.png"
    garbage.write_bytes(b"not a png at all")
    with pytest.raises(DataError, match="junk.png"):
        read_mask(garbage)


# -------------------------------------------------------------------------------------- read_mask


@pytest.mark.parametrize(
    "fg,bg,dtype", [(1, 0, np.uint8), (255, 0, np.uint8), (200, 17, np.uint8), (1000, 3, np.uint16)]
)
def test_two_valued_masks_binarised(tmp_path, fg, bg, dtype):
    m = blob_mask((16, 16), value=fg, background=bg, dtype=dtype)
    iio.imwrite(tmp_path / "m.png", m)
    out = read_mask(tmp_path / "m.png")
    assert out.dtype == bool
    np.testing.assert_array_equal(out, m == fg)


def test_rgb_mask_and_tiff_mask(tmp_path):
    m = blob_mask((16, 16))
    iio.imwrite(tmp_path / "rgb.png", np.stack([m] * 3, axis=-1))
    np.testing.assert_array_equal(read_mask(tmp_path / "rgb.png"), m > 0)
    tifffile.imwrite(tmp_path / "m.tif", (m > 0).astype(np.uint8))
    np.testing.assert_array_equal(read_mask(tmp_path / "m.tif"), m > 0)


def test_more_than_two_values_is_an_error(tmp_path):
    m = blob_mask((16, 16), value=2, background=0)
    m[:4, :4] = 1  # a label map {0, 1, 2}
    iio.imwrite(tmp_path / "labels.png", m)
    with pytest.raises(DataError, match=r"labels\.png.*3 distinct values"):
        read_mask(tmp_path / "labels.png")
    grey = noise_image((16, 16))  # an image given as mask
    iio.imwrite(tmp_path / "grey.png", grey)
    with pytest.raises(DataError, match=rf"grey\.png.*{len(np.unique(grey))} distinct values"):
        read_mask(tmp_path / "grey.png")


def test_jpeg_compressed_mask_accepted_and_thresholded(tmp_path):
    m = np.zeros((64, 64), np.uint8)
    yy, xx = np.mgrid[:64, :64]
    m[(yy - 32) ** 2 / 400 + (xx - 24) ** 2 / 150 < 1] = 255
    iio.imwrite(tmp_path / "m.jpg", m, quality=75)
    raw = iio.imread(tmp_path / "m.jpg")
    assert len(np.unique(raw)) > 2  # the artefacts are really there
    out = read_mask(tmp_path / "m.jpg")
    assert (out != (m > 0)).mean() < 0.005


def test_empty_mask_loads_with_warning(tmp_path):
    make_pair(tmp_path, "ok")
    _, mp = make_pair(tmp_path, "empty", mask=np.zeros((32, 32), np.uint8))
    ds = load_dataset(tmp_path, size=16)
    assert ds.ids == ["empty", "ok"]
    assert ds[0].mask.sum() == 0
    assert any(str(mp) in w and "empty" in w for w in ds.warnings)
    assert not read_mask(mp).any()


# -------------------------------------------------------------------------------------- transforms


def test_zscore_and_constant_image():
    img = np.random.default_rng(1).random((20, 30)).astype(np.float32) * 5 + 3
    z = zscore(img)
    assert z.dtype == np.float32
    assert abs(float(z.mean())) < 1e-5 and abs(float(z.std()) - 1) < 1e-4
    const = zscore(np.full((8, 8), 0.7, np.float32))
    assert np.all(const == 0) and not np.isnan(const).any()


def test_resize_image_and_mask():
    img = np.random.default_rng(2).random((40, 60)).astype(np.float32)
    out = resize_image(img, 16)
    assert out.shape == (16, 16) and out.dtype == np.float32
    assert 0 <= out.min() and out.max() <= 1
    mask = np.zeros((40, 60), bool)
    mask[10:30, 15:45] = True
    small = resize_mask(mask, 20)
    assert small.shape == (20, 20) and small.dtype == np.uint8 and set(np.unique(small)) <= {0, 1}
    assert abs(small.mean() - mask.mean()) < 0.05
    big = resize_mask(mask, 120)
    assert abs(big.mean() - mask.mean()) < 0.02


# ---------------------------------------------------------------------------------------- dataset


def test_load_dataset_basic(tmp_path):
    img = noise_image((40, 48))
    make_pair(tmp_path, "b", image=img, mask=blob_mask((40, 48), value=1))
    make_pair(tmp_path, "a", img_ext="tif", mask_ext="bmp", mask_suffix="_mask")
    ds = load_dataset(tmp_path, size=16)
    assert isinstance(ds, Dataset) and len(ds) == 2 and ds.ids == ["a", "b"]
    case = ds[1]
    assert isinstance(case, Case)
    assert case.image.shape == (16, 16) and case.image.dtype == np.float32
    assert abs(float(case.image.mean())) < 1e-5 and abs(float(case.image.std()) - 1) < 1e-4
    assert case.mask.dtype == np.uint8 and set(np.unique(case.mask)) == {0, 1}
    assert case.original_shape == (40, 48) and case.split is None
    assert case.image_path == tmp_path / "images" / "b.png" and case.mask_path == tmp_path / "masks" / "b.png"
    assert ds[0].mask_path.name == "a_mask.bmp"
    assert ds.images().shape == (2, 1, 16, 16) and ds.images().dtype == np.float32
    assert ds.masks().shape == (2, 16, 16) and ds.masks().dtype == np.uint8
    assert ds.skipped == [] and ds.warnings == []


def test_dicom_in_dataset_with_and_without_extension(tmp_path):
    make_pair(tmp_path, "png")
    stored = np.random.default_rng(3).integers(0, 4000, (32, 32)).astype(np.uint16)
    write_dicom(tmp_path / "images" / "scan1.dcm", stored, photometric="MONOCHROME1")
    iio.imwrite(tmp_path / "masks" / "scan1.png", blob_mask())
    write_dicom(tmp_path / "images" / "1.2.840.99", stored)  # no extension: found by the DICM magic
    iio.imwrite(tmp_path / "masks" / "1.2.840.99_mask.png", blob_mask())
    ds = load_dataset(tmp_path, size=16)
    assert ds.ids == ["1.2.840.99", "png", "scan1"]
    # MONOCHROME1 is the inverse of the same pixels read as MONOCHROME2 (before z-score: negated)
    np.testing.assert_allclose(ds[2].image, -ds[0].image, atol=1e-4)


def test_missing_folder_not_folder_no_images(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(tmp_path / "nope")
    f = tmp_path / "file.txt"
    f.write_text("x")
    with pytest.raises(DataError, match="file.txt.*not a folder"):
        load_dataset(f)
    with pytest.raises(DataError, match="no images/ folder"):
        load_dataset(tmp_path, on_error="skip")
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    with pytest.raises(DataError, match="no images found"):
        load_dataset(tmp_path, on_error="skip")


def test_no_masks_folder(tmp_path):
    (tmp_path / "images").mkdir()
    iio.imwrite(tmp_path / "images" / "a.png", noise_image())
    with pytest.raises(DataError, match="no masks/ folder"):
        load_dataset(tmp_path)


def test_image_without_mask_and_mask_without_image(tmp_path):
    make_pair(tmp_path, "ok")
    iio.imwrite(tmp_path / "images" / "lonely.png", noise_image())
    iio.imwrite(tmp_path / "masks" / "orphan.png", blob_mask())
    with pytest.raises(DataError) as err:
        load_dataset(tmp_path)
    msg = str(err.value)
    assert "lonely.png: image without mask" in msg
    assert "orphan.png: mask without image" in msg


def test_duplicate_ids(tmp_path):
    make_pair(tmp_path, "ok")
    make_pair(tmp_path, "a")
    tifffile.imwrite(tmp_path / "images" / "a.tif", noise_image())
    make_pair(tmp_path, "b")
    iio.imwrite(tmp_path / "masks" / "b_mask.png", blob_mask())
    with pytest.raises(DataError) as err:
        load_dataset(tmp_path)
    msg = str(err.value)
    assert "duplicate id 'a'" in msg and "a.png" in msg and "a.tif" in msg
    assert "duplicate id 'b'" in msg and "b_mask.png" in msg
    ds = load_dataset(tmp_path, on_error="skip")
    assert ds.ids == ["ok"]


def test_mask_of_another_size(tmp_path):
    make_pair(tmp_path, "ok")
    make_pair(tmp_path, "bad", image=noise_image((32, 32)), mask=blob_mask((32, 40)))
    with pytest.raises(DataError, match=r"masks/bad\.png: mask size 40x32 \(WxH\) differs from its image"):
        load_dataset(tmp_path)


def test_unsafe_id_rejected(tmp_path):
    make_pair(tmp_path, "ok")
    make_pair(tmp_path, "with space")
    with pytest.raises(DataError, match=r"with space\.png: unsafe id"):
        load_dataset(tmp_path)


def test_raise_collects_every_problem_one_per_line(tmp_path):
    make_pair(tmp_path, "ok")
    _, mp = make_pair(tmp_path, "trunc")
    ip = tmp_path / "images" / "trunc.png"
    ip.write_bytes(ip.read_bytes()[:60])
    labels = blob_mask(value=2)
    labels[:3, :3] = 1
    make_pair(tmp_path, "labels", mask=labels)
    iio.imwrite(tmp_path / "images" / "nomask.png", noise_image())
    with pytest.raises(DataError) as err:
        load_dataset(tmp_path)
    lines = str(err.value).splitlines()
    assert lines[0].startswith("3 problems in")
    body = lines[1:]
    assert len(body) == 3
    assert any("images/trunc.png" in line and "cannot read image" in line for line in body)
    assert any("masks/labels.png" in line and "3 distinct values" in line for line in body)
    assert any("images/nomask.png" in line and "image without mask" in line for line in body)
    assert len(err.value.problems) == 3


def test_skip_mode_loads_the_rest(tmp_path):
    make_pair(tmp_path, "good1")
    make_pair(tmp_path, "good2")
    ip, _ = make_pair(tmp_path, "trunc")
    ip.write_bytes(ip.read_bytes()[:60])
    iio.imwrite(tmp_path / "masks" / "orphan.png", blob_mask())
    ds = load_dataset(tmp_path, size=16, on_error="skip")
    assert ds.ids == ["good1", "good2"]
    skipped = {p.name: reason for p, reason in ds.skipped}
    assert set(skipped) == {"trunc.png", "orphan.png"}
    assert "cannot read image" in skipped["trunc.png"]
    assert "mask without image" in skipped["orphan.png"]


def test_skip_mode_nothing_loads_raises(tmp_path):
    ip, _ = make_pair(tmp_path, "trunc")
    ip.write_bytes(ip.read_bytes()[:60])
    with pytest.raises(DataError, match=r"no usable image/mask pair(.|\n)*trunc\.png"):
        load_dataset(tmp_path, on_error="skip")


def test_bad_on_error_value(tmp_path):
    make_pair(tmp_path, "a")
    with pytest.raises(ValueError, match="on_error"):
        load_dataset(tmp_path, on_error="ignore")


# -------------------------------------------------------------------------------------- splits


def test_split_csv_honoured(tmp_path):
    for cid in ("a", "b", "c", "d"):
        make_pair(tmp_path, cid)
    (tmp_path / "split.csv").write_text("id,split,finding\na,train,x\nb,test,y\nc,train,z\nd,val,w\n")
    ds = load_dataset(tmp_path, size=16)
    assert {c.id: c.split for c in ds} == {"a": "train", "b": "test", "c": "train", "d": "val"}
    assert ds.subset("train").ids == ["a", "c"]
    assert ds.subset("test").ids == ["b"]
    assert ds.subset("train").images().shape == (2, 1, 16, 16)
    assert len(ds.subset("nothing")) == 0 and ds.subset("nothing").images().shape == (0, 1, 16, 16)


def test_split_csv_problems(tmp_path):
    for cid in ("a", "b", "c"):
        make_pair(tmp_path, cid)
    csv_path = tmp_path / "split.csv"
    csv_path.write_text("id,split\na,train\nb,holdout\nzzz,test\n")
    with pytest.raises(DataError) as err:
        load_dataset(tmp_path)
    msg = str(err.value)
    assert "split.csv: row 3: bad split value 'holdout'" in msg
    assert "split.csv: row 4: unknown id 'zzz'" in msg
    assert "split.csv: no row for id 'c'" in msg
    ds = load_dataset(tmp_path, size=16, on_error="skip")
    assert ds.ids == ["a"] and ds[0].split == "train"
    assert all(p == csv_path for p, _ in ds.skipped) and len(ds.skipped) == 3
    csv_path.write_text("name,fold\na,train\n")
    with pytest.raises(DataError, match="split.csv lacks column"):
        load_dataset(tmp_path, on_error="skip")


# -------------------------------------------------------------------------------------- real data


@pytest.mark.data
def test_shenzhen_real_data():
    if not SHENZHEN.is_dir():
        pytest.skip(f"the shared Shenzhen data set is not present at {SHENZHEN.resolve()}")
    ds = load_dataset(SHENZHEN, size=128)
    assert len(ds) == 550
    assert len(ds.subset("train")) == 385 and len(ds.subset("test")) == 165
    assert ds.images().shape == (550, 1, 128, 128)
    masks = ds.masks()
    assert masks.shape == (550, 128, 128) and set(np.unique(masks)) == {0, 1}
    assert 0.05 < masks.mean() < 0.4
    assert ds.skipped == [] and ds.warnings == []
