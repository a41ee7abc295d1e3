"""Image reading: every accepted format and pixel layout becomes the same RGB uint8 array."""

from __future__ import annotations

import struct
import subprocess
import sys
import zlib

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


def png_bomb(width: int, height: int) -> bytes:
    """A 1-bit all-black PNG: 30000x30000 is ~110 KB on disk and 900 M pixels (2.7 GB as RGB) decoded."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = bytes(1 + (width + 7) // 8)  # filter byte, then the bits of one row
    packer = zlib.compressobj(9)
    body = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


# The CLI run with its own peak RSS (VmHWM, KiB) written last on stderr. Not ru_maxrss: Linux
# carries that over exec from the parent, which is pytest with everything it loaded.
WITH_PEAK_RSS = """
import re, sys
from pathlib import Path
from stdr_deploy.cli import main
try:
    main()
finally:
    peak = re.search(r"VmHWM:\\s+(\\d+)", Path("/proc/self/status").read_text()).group(1)
    sys.stderr.write(f"\\npeak_rss_kib={peak}\\n")
"""


def test_a_decompression_bomb_is_refused_from_its_header_in_under_200_mb(tmp_path):
    """Issue 23: `ocr` on this file grew to 19 GB and was OOM-killed; now exit 2, nothing decoded."""
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_bomb(30000, 30000))
    assert bomb.stat().st_size < 200_000
    done = subprocess.run([sys.executable, "-c", WITH_PEAK_RSS, "ocr", str(bomb)], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 2, done.stderr
    assert f"cannot read image {bomb}: its header declares 900000000 pixels" in done.stderr
    assert "nothing was decoded" in done.stderr and "Traceback" not in done.stderr
    peak_mib = int(done.stderr.rsplit("peak_rss_kib=", 1)[1]) / 1024
    assert peak_mib < 200, f"peak RSS {peak_mib:.0f} MiB"


def test_the_header_is_checked_against_the_limit_before_decoding(tmp_path):
    """Above our limit but below Pillow's own bomb limit: refused by our check; at the limit: read."""
    path = tmp_path / "wide.png"
    path.write_bytes(png_bomb(10000, 6000))  # 60 M pixels: over the default 50 M
    with pytest.raises(ImageReadError, match=r"declares 10000x6000 = 60000000 pixels, over the limit of 50000000"):
        read_image(path)
    small = tmp_path / "small.png"
    small.write_bytes(png_bomb(40, 30))
    with pytest.raises(ImageReadError, match="over the limit of 1199"):
        read_image(small, max_pixels=1199)
    assert read_image(small, max_pixels=1200).shape == (30, 40, 3)
