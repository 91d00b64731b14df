"""Hostile images in `folder` data: every kind of bad file is skipped with its reason (or, with
--strict, is an error naming it); every odd-but-valid mode is converted the documented way."""
import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from genlab.cli import main
from genlab.data import load_data
from genlab.images import MAX_PIXELS, BadImage, read_image
from genlab.registry import UsageError


def png_header(w: int, h: int) -> bytes:
    """A PNG that claims w x h pixels (8-bit grey) and holds none: what a decompression bomb's header
    looks like; only the header is ever read."""
    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


def encoded(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def noise_rgb(n=8, seed=0):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (n, n, 3), dtype=np.uint8))


def scrambled(b: bytes) -> bytes:
    return b[:60] + bytes(x ^ 0x5A for x in b[60:120]) + b[120:]


BAD = {  # file name -> (bytes, reason the skip list must give)
    "bomb.png": (png_header(100_000, 100_000), "decompression bomb"),          # Pillow's error
    "bomb-warning.png": (png_header(10_000, 9_000), "decompression bomb"),     # Pillow's warning
    "over-limit.png": (png_header(9_000, 8_000), "over the limit"),            # genlab's MAX_PIXELS
    "truncated.png": (encoded(noise_rgb(32), "PNG")[:300], "corrupt or truncated"),
    "truncated.jpg": (encoded(noise_rgb(32), "JPEG")[:400], "corrupt or truncated"),
    "corrupt.png": (scrambled(encoded(noise_rgb(32), "PNG")), "corrupt or truncated"),
    "text.jpg": (b"these are my holiday notes, not a photo\n" * 10, "not an image file"),
    "html.png": (b"<!DOCTYPE html><html><body>404</body></html>", "not an image file"),
    "empty.png": (b"", "empty file"),
    "nan.tif": (encoded(Image.fromarray(np.full((8, 8), np.nan, np.float32)), "TIFF"), "non-finite"),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_each_bad_file_is_refused_with_its_reason(name, tmp_path):
    data, reason = BAD[name]
    p = tmp_path / name
    p.write_bytes(data)
    with pytest.raises(BadImage, match=reason):
        read_image(p, 8)


def test_genlab_limit_is_below_pillows():
    assert 9_000 * 8_000 > MAX_PIXELS and MAX_PIXELS < Image.MAX_IMAGE_PIXELS


def test_bad_files_are_skipped_listed_or_strict(tmp_path):
    for name, (data, _) in BAD.items():
        (tmp_path / name).write_bytes(data)
    noise_rgb().save(tmp_path / "good.png")
    ds = load_data("folder", data_dir=str(tmp_path), image_size=8)
    assert len(ds) == 1 and len(ds.skipped) == len(BAD)
    for line in ds.skipped:
        name = Path(line.split(": ")[0]).name
        assert BAD[name][1] in line, line
    with pytest.raises(UsageError, match=r"unusable image .*bomb-warning.png: decompression bomb"):
        load_data("folder", data_dir=str(tmp_path), image_size=8, strict=True)  # the first, sorted


def test_empty_and_all_bad_folders_are_clear_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no images here")
    with pytest.raises(UsageError, match="no usable images .*: no files with an image extension"):
        load_data("folder", data_dir=str(tmp_path / "empty"))
    (tmp_path / "bad").mkdir()
    for name in ("empty.png", "text.jpg", "truncated.png"):
        (tmp_path / "bad" / name).write_bytes(BAD[name][0])
    with pytest.raises(UsageError, match="all 3 image files are unusable, e.g. .*empty.png: empty file"):
        load_data("folder", data_dir=str(tmp_path / "bad"))


def one_pixel(path, size=8):
    return read_image(path, size)[0, 0].tolist()


def test_modes_are_converted_not_clipped(tmp_path):
    def save(name, im, **kw):
        im.save(tmp_path / name, **kw)
        return tmp_path / name
    # 16-bit grey: 0..65535 scales linearly to 0..255 (x / 257), never clipped at 255
    for v, want in ((65535, 255), (32768, 128), (1000, 4), (257, 1)):
        p = save(f"g16-{v}.png", Image.fromarray(np.full((8, 8), v, np.uint16)))
        assert Image.open(p).mode == "I;16" and one_pixel(p) == [want] * 3, v
    p = save("i16.tif", Image.fromarray(np.full((8, 8), 40000, np.uint16)))
    assert one_pixel(p) == [round(40000 / 257)] * 3
    p = save("i32.tif", Image.fromarray(np.full((8, 8), 65535, np.int32)))   # mode I, 16-bit values
    assert Image.open(p).mode == "I" and one_pixel(p) == [255] * 3
    p = save("f01.tif", Image.fromarray(np.full((8, 8), 0.5, np.float32)))  # float in [0, 1]
    assert Image.open(p).mode == "F" and one_pixel(p) == [128] * 3
    ramp = np.linspace(-3, 5, 64, dtype=np.float32).reshape(8, 8)           # other floats: min..max
    x = read_image(save("fwide.tif", Image.fromarray(ramp)), 8)
    assert x.min() == 0 and x.max() == 255
    # alpha is composited onto black; palette transparency too
    rgba = Image.new("RGBA", (8, 8), (200, 100, 50, 128))
    assert all(abs(a - b) <= 1 for a, b in zip(one_pixel(save("rgba.png", rgba)), (100, 50, 25)))
    assert all(abs(a - b) <= 1 for a, b in zip(one_pixel(save("la.png", rgba.convert("LA"))),
                                               [round(rgba.convert("L").getpixel((0, 0)) * 128 / 255)] * 3))
    pal = Image.new("P", (8, 8), 1)
    pal.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    assert one_pixel(save("pal.png", pal)) == [0, 255, 0]
    assert one_pixel(save("pal-t.png", pal, transparency=1)) == [0, 0, 0]
    assert one_pixel(save("pal.gif", pal)) == [0, 255, 0]
    assert one_pixel(save("cmyk.jpg", Image.new("CMYK", (8, 8), (0, 255, 0, 0)), quality=100))[1] < 10
    assert one_pixel(save("cmyk.tif", Image.new("CMYK", (8, 8), (0, 255, 0, 0)))) == [255, 0, 255]
    assert one_pixel(save("bw.bmp", Image.new("1", (8, 8), 1))) == [255] * 3


def test_exif_orientation_is_applied(tmp_path):
    a = np.zeros((8, 8), np.uint8)
    a[:4, :4] = 255                                          # stored: top-left quadrant white
    exif = Image.Exif()
    exif[0x0112] = 6                                          # "rotate 90 degrees clockwise to display"
    Image.fromarray(a).save(tmp_path / "o.png", exif=exif)
    x = read_image(tmp_path / "o.png", 8)[..., 0]
    assert x[:4, 4:].min() == 255 and x[:4, :4].max() == 0   # displayed: top-right quadrant white


def test_one_bad_file_among_a_thousand(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(1000):
        (tmp_path / f"{i:04d}.png").write_bytes(encoded(Image.fromarray(
            rng.integers(0, 256, (8, 8), dtype=np.uint8)), "PNG"))
    (tmp_path / "0500.png").write_bytes(encoded(noise_rgb(8), "PNG")[:50])  # one truncated
    ds = load_data("folder", data_dir=str(tmp_path), image_size=8)
    assert ds.images.shape == (999, 1, 8, 8) and len(ds.skipped) == 1 and "0500.png" in ds.skipped[0]


def test_training_writes_the_skip_list_and_strict_names_the_file(capsys, tmp_path):
    d = tmp_path / "imgs"
    d.mkdir()
    for i in range(16):
        noise_rgb(8, i).save(d / f"{i:02d}.png")
    (d / "zz-broken.jpg").write_bytes(BAD["truncated.jpg"][0])
    common = ["train", "gan", "--preset", "tiny", "--data", "folder", "--data-dir", str(d),
              "--image-size", "8", "--max-steps", "1", "--threads", "1", "--sample-every", "0"]
    assert main(common + ["--out", str(tmp_path / "r")]) == 0
    listed = (tmp_path / "r" / "skipped_images.txt").read_text().splitlines()
    assert len(listed) == 1 and "zz-broken.jpg: corrupt or truncated" in listed[0]
    assert "skipped 1 unreadable images" in capsys.readouterr().err
    assert main(common + ["--out", str(tmp_path / "s"), "--strict"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unusable image" in err[0] and "zz-broken.jpg" in err[0]
    assert not (tmp_path / "s").exists()                     # nothing written for a refused run
