"""load_image: every bad-input case of issue 2 §3 gives its stated behaviour."""

from __future__ import annotations

import io
import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from zsplg_fast.data.images import LoadStats, load_image
from zsplg_fast.errors import InputImageError

RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, (12, 20, 3), dtype=np.uint8)


def _save(img: Image.Image, path: Path, **kw: object) -> Path:
    img.save(path, **kw)
    return path


def _png_bytes(w: int, h: int, bit_depth: int, color_type: int, raw: bytes) -> bytes:
    """A minimal PNG (IHDR, IDAT, IEND) with the given header; ``raw`` is the filtered scanline data."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)
        )

    ihdr = struct.pack(">IIBBBBB", w, h, bit_depth, color_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    )


def test_rgb_png_roundtrip_exact(tmp_path: Path) -> None:
    stats = LoadStats()
    out = load_image(_save(Image.fromarray(RGB), tmp_path / "a.png"), stats=stats)
    assert out.dtype == np.uint8 and out.shape == (12, 20, 3) and out.flags.c_contiguous
    np.testing.assert_array_equal(out, RGB)
    assert stats.to_dict() == {"loaded": 1}


def test_grayscale_and_cmyk_converted_and_counted(tmp_path: Path) -> None:
    g = RNG.integers(0, 256, (5, 7), dtype=np.uint8)
    stats = LoadStats()
    out = load_image(_save(Image.fromarray(g, "L"), tmp_path / "g.png"), stats=stats)
    np.testing.assert_array_equal(out, np.repeat(g[:, :, None], 3, axis=2))
    cmyk = Image.new("CMYK", (4, 3), (0, 255, 255, 0))  # pure red in naive CMYK
    out = load_image(_save(cmyk, tmp_path / "c.tif"), stats=stats)
    np.testing.assert_array_equal(out[0, 0], [255, 0, 0])
    assert stats.counts["mode:L"] == 1 and stats.counts["mode:CMYK"] == 1 and stats.counts["loaded"] == 2


def test_rgba_and_la_alpha_composited_onto_black(tmp_path: Path) -> None:
    rgba = np.zeros((2, 3, 4), np.uint8)
    rgba[..., :3] = (200, 100, 50)
    rgba[..., 3] = [[255, 128, 0], [0, 64, 255]]
    stats = LoadStats()
    out = load_image(_save(Image.fromarray(rgba, "RGBA"), tmp_path / "a.png"), stats=stats)
    expect = (rgba[..., :3].astype(np.uint16) * rgba[..., 3:4] + 127) // 255
    np.testing.assert_array_equal(out, expect.astype(np.uint8))
    assert out[0, 2].tolist() == [0, 0, 0] and out[0, 0].tolist() == [200, 100, 50]
    assert out[0, 1].tolist() == [100, 50, 25]
    la = Image.fromarray(
        np.stack([np.full((2, 2), 200, np.uint8), np.array([[255, 0], [128, 255]], np.uint8)], -1), "LA"
    )
    out = load_image(_save(la, tmp_path / "la.png"), stats=stats)
    assert (
        out[0, 0].tolist() == [200] * 3 and out[0, 1].tolist() == [0] * 3 and out[1, 0].tolist() == [100] * 3
    )
    assert stats.counts["alpha_to_black"] == 2
    assert stats.counts["mode:RGBA"] == 1 and stats.counts["mode:LA"] == 1


def test_palette_with_and_without_transparency(tmp_path: Path) -> None:
    idx = np.array([[0, 1], [1, 0]], np.uint8)
    p = Image.fromarray(idx, "P")
    p.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    stats = LoadStats()
    out = load_image(_save(p, tmp_path / "p.png"), stats=stats)
    assert out[0, 0].tolist() == [255, 0, 0] and out[0, 1].tolist() == [0, 255, 0]
    out = load_image(_save(p, tmp_path / "pt.png", transparency=0), stats=stats)
    assert out[0, 0].tolist() == [0, 0, 0] and out[0, 1].tolist() == [
        0,
        255,
        0,
    ]  # index 0 transparent → black
    assert stats.counts["mode:P"] == 2 and stats.counts["alpha_to_black"] == 1


@pytest.mark.parametrize(
    ("orientation", "op"), [(6, Image.Transpose.ROTATE_270), (8, Image.Transpose.ROTATE_90)]
)
def test_exif_orientation_applied(tmp_path: Path, orientation: int, op: Image.Transpose) -> None:
    img = Image.fromarray(np.repeat(np.arange(20, dtype=np.uint8)[None, :] * 12, 12, axis=0), "L").convert(
        "RGB"
    )
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = _save(img, tmp_path / "r.png", exif=exif)  # PNG keeps pixels exact
    stats = LoadStats()
    out = load_image(path, stats=stats)
    assert out.shape == (20, 12, 3)
    np.testing.assert_array_equal(out, np.asarray(img.transpose(op)))
    assert stats.counts["exif_transposed"] == 1
    jpg = _save(img, tmp_path / "r.jpg", exif=exif, quality=95)
    assert load_image(jpg).shape == (20, 12, 3)


def test_16bit_png_refused_then_rescaled(tmp_path: Path) -> None:
    v = np.array([[0, 256, 65535], [1000, 30000, 512]], np.uint16)
    path = _save(Image.fromarray(v), tmp_path / "g16.png")
    with pytest.raises(InputImageError, match=r"g16\.png.*high-bit-depth.*rescale_high_bit_depth"):
        load_image(path)
    stats = LoadStats()
    out = load_image(path, rescale_high_bit_depth=True, stats=stats)
    np.testing.assert_array_equal(out[..., 0], (v >> 8).astype(np.uint8))
    assert (out[..., 0] == out[..., 2]).all() and stats.counts["rescaled:I;16"] == 1


def test_16bit_rgb_png_refused(tmp_path: Path) -> None:
    w, h = 3, 2
    px = np.full((h, w, 3), 0x1234, dtype=">u2")
    raw = b"".join(b"\x00" + px[y].tobytes() for y in range(h))
    path = tmp_path / "rgb16.png"
    path.write_bytes(_png_bytes(w, h, 16, 2, raw))
    with pytest.raises(InputImageError, match="high-bit-depth"):
        load_image(path)
    out = load_image(path, rescale_high_bit_depth=True)
    assert out.shape == (2, 3, 3) and (out == 0x12).all()


def test_float_tiff_refused_then_rescaled(tmp_path: Path) -> None:
    f = np.array([[0.0, 0.5], [1.0, 0.25]], np.float32)
    path = _save(Image.fromarray(f, "F"), tmp_path / "f.tif")
    with pytest.raises(InputImageError, match=r"f\.tif.*mode F"):
        load_image(path)
    out = load_image(path, rescale_high_bit_depth=True)
    assert out[..., 1].tolist() == [[0, 128], [255, 64]]
    wide = _save(Image.fromarray(np.array([[-10.0, 10.0]], np.float32), "F"), tmp_path / "w.tif")
    assert load_image(wide, rescale_high_bit_depth=True)[0, :, 0].tolist() == [0, 255]


def test_truncated_jpeg_fails_at_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    buf = io.BytesIO()
    Image.fromarray(RNG.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buf, format="JPEG")
    path = tmp_path / "t.jpg"
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(InputImageError, match=r"t\.jpg.*truncated"):
        load_image(path)
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)  # a library flipped it on
    with pytest.raises(InputImageError, match="truncated"):
        load_image(path)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda p: p.write_bytes(b""), "empty"),
        (lambda p: p.write_text("hello, not an image\n"), "not an image"),
        (lambda p: p.mkdir(), "directory"),
        (lambda p: None, "no such file"),
    ],
    ids=["zero-byte", "text-named-jpg", "directory", "missing"],
)
def test_unusable_files_name_the_file(tmp_path: Path, make: object, reason: str) -> None:
    path = tmp_path / "bad.jpg"
    make(path)  # type: ignore[operator]
    with pytest.raises(InputImageError, match=reason) as ei:
        load_image(path)
    assert ei.value.path == str(path) and str(path) in str(ei.value)


def test_huge_header_refused_before_decode(tmp_path: Path) -> None:
    path = tmp_path / "huge.png"
    path.write_bytes(_png_bytes(20000, 2, 8, 2, b""))  # claims 20000x2, has no pixel data
    with pytest.raises(InputImageError, match=r"20000x2.*max_long_side=16384.*before decoding"):
        load_image(path)
    small_cap = _save(Image.fromarray(RGB), tmp_path / "ok.png")
    with pytest.raises(InputImageError, match="max_long_side=16"):
        load_image(small_cap, max_long_side=16)
    assert load_image(small_cap, max_long_side=20).shape == (12, 20, 3)


def test_pil_bomb_guard_becomes_input_image_error(tmp_path: Path) -> None:
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_bytes(15000, 15000, 8, 2, b""))  # 225 Mpx > 2x PIL's limit: DecompressionBombError
    with pytest.raises(InputImageError, match="bomb"):
        load_image(path)
    path.write_bytes(_png_bytes(10000, 10000, 8, 2, b""))  # 100 Mpx > PIL's limit: warning in PIL
    with (
        pytest.warns(Image.DecompressionBombWarning),
        pytest.raises(InputImageError, match="MAX_IMAGE_PIXELS"),
    ):
        load_image(path)


def test_load_stats_merge_and_json() -> None:
    a, b = LoadStats(), LoadStats()
    a.add("loaded", 2)
    b.add("loaded")
    b.add("mode:L")
    a.merge(b)
    assert a.to_dict() == {"loaded": 3, "mode:L": 1}
    assert LoadStats.from_dict(json.loads(a.to_json())).to_dict() == a.to_dict()
