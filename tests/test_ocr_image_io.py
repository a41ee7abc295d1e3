"""Image reading: every accepted format and pixel layout becomes the same RGB uint8 array."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from stdr_deploy.ocr import BadImageError, ImageReadError, read_image
from stdr_deploy.ocr.image_io import check_image, to_rgb8


@pytest.fixture(scope="module")
def scene(shared) -> np.ndarray:
    """A real scene, cut small so every format round trip stays quick."""
    return np.asarray(Image.open(shared / "testdata/scenes_A/img02.png").convert("RGB"))[:96, :128]


@pytest.mark.parametrize("suffix, options", [
    (".png", {}), (".bmp", {}), (".tiff", {}), (".webp", {"lossless": True}),
])
def test_lossless_formats_read_back_exactly(tmp_path, scene, suffix, options):
    path = tmp_path / f"scene{suffix}"
    Image.fromarray(scene).save(path, **options)
    got = read_image(path)
    assert got.dtype == np.uint8 and got.shape == scene.shape
    assert np.array_equal(got, scene)


def test_jpeg_reads_close_to_the_original(tmp_path, scene):
    path = tmp_path / "scene.jpg"
    Image.fromarray(scene).save(path, quality=95)
    got = read_image(path)
    assert got.shape == scene.shape and got.dtype == np.uint8
    assert np.abs(got.astype(int) - scene).mean() < 3


def test_gray_becomes_three_equal_channels(tmp_path, scene):
    gray = np.asarray(Image.fromarray(scene).convert("L"))
    path = tmp_path / "gray.png"
    Image.fromarray(gray).save(path)
    got = read_image(path)
    assert got.shape == (*gray.shape, 3)
    assert all(np.array_equal(got[:, :, c], gray) for c in range(3))


def test_rgba_is_composited_over_white(tmp_path):
    rgba = np.zeros((4, 6, 4), dtype=np.uint8)
    rgba[:, :3] = (10, 20, 30, 255)  # opaque dark ink
    rgba[:, 3:] = (0, 0, 0, 0)  # fully transparent, black underneath
    path = tmp_path / "rgba.png"
    Image.fromarray(rgba, "RGBA").save(path)
    got = read_image(path)
    assert got.shape == (4, 6, 3)
    assert (got[:, :3] == (10, 20, 30)).all()
    assert (got[:, 3:] == 255).all()


@pytest.mark.parametrize("suffix", [".png", ".tiff"])
def test_16_bit_gray_keeps_its_range(tmp_path, suffix):
    ramp = (np.arange(64, dtype=np.uint16) * 1040).reshape(8, 8)  # 0 .. 65520
    path = tmp_path / f"deep{suffix}"
    Image.fromarray(ramp).save(path)
    got = read_image(path)
    assert got.shape == (8, 8, 3) and got.dtype == np.uint8
    expected = np.rint(ramp / 65535 * 255).astype(np.uint8)
    assert np.abs(got[:, :, 0].astype(int) - expected).max() <= 1


def test_16_bit_rgb_png_via_opencv_encoding(tmp_path):
    import cv2

    rgb16 = np.zeros((4, 4, 3), dtype=np.uint16)
    rgb16[..., 0] = 65535  # pure red
    path = tmp_path / "rgb16.png"
    cv2.imwrite(str(path), rgb16[..., ::-1])  # OpenCV writes BGR
    got = read_image(path)
    assert (got == (255, 0, 0)).all()


def test_exif_orientation_is_applied(tmp_path):
    """A landscape image stored with 'rotate 90 CW to display' comes back as portrait."""
    stored = np.zeros((20, 40, 3), dtype=np.uint8)
    stored[:, :20] = (255, 0, 0)  # left half red, right half blue
    stored[:, 20:] = (0, 0, 255)
    image = Image.fromarray(stored)
    exif = image.getexif()
    exif[0x0112] = 6  # Orientation: the viewer rotates 90 degrees clockwise
    path = tmp_path / "rotated.jpg"
    image.save(path, quality=95, exif=exif)
    got = read_image(path)
    assert got.shape == (40, 20, 3)
    assert got[5, 10, 0] > 200 and got[5, 10, 2] < 60  # top is the former left (red)
    assert got[35, 10, 2] > 200 and got[35, 10, 0] < 60  # bottom is the former right (blue)


def test_unreadable_files_raise_an_error_naming_them(tmp_path):
    missing = tmp_path / "missing.png"
    with pytest.raises(ImageReadError, match="missing.png"):
        read_image(missing)
    text = tmp_path / "notes.png"
    text.write_text("this is not an image")
    with pytest.raises(ImageReadError, match="notes.png"):
        read_image(text)
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    with pytest.raises(ImageReadError, match="empty.jpg.*empty"):
        read_image(empty)


def test_arrays_of_other_layouts_convert_and_bad_ones_are_refused():
    assert to_rgb8(np.full((2, 3), 1.0, dtype=np.float32)).tolist() == [[[255] * 3] * 3] * 2
    assert to_rgb8(np.ones((2, 3, 1), dtype=bool))[0, 0].tolist() == [255, 255, 255]
    with pytest.raises(BadImageError):
        to_rgb8(np.zeros((2, 3, 5), dtype=np.uint8))
    with pytest.raises(BadImageError, match="exceeds"):
        check_image(np.zeros((100, 100, 3), dtype=np.uint8), max_pixels=9_999)
    with pytest.raises(BadImageError, match="RGB uint8"):
        check_image(np.zeros((10, 10), dtype=np.uint8), max_pixels=1_000)
