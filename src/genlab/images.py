"""Reading image files into uint8 arrays: IDX files (MNIST's format) and any single image Pillow
decodes, robustly (the folder data source reads files with it: every way a file can be broken is a
one-line BadImage); and `resize`, the one rule genlab resizes uint8 images with."""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .registry import UsageError

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm"}
MAX_PIXELS = 1 << 26  # 67 MP: bigger images are refused as decompression bombs (Pillow's own: 89 MP)


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (LeCun's MNIST format), gzipped or not: magic, dims (big-endian), uint8 data."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise UsageError(f"{path} is not an IDX uint8 file")
    ndim = raw[3]
    dims = np.frombuffer(raw, ">i4", count=ndim, offset=4)
    data = np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise UsageError(f"{path} is truncated: expected {int(np.prod(dims))} bytes of data")
    return data.reshape(tuple(int(d) for d in dims))


class BadImage(ValueError):
    """An image file the folder source cannot use; the message says why."""


def read_image(path: Path, size: int) -> np.ndarray:
    """One image file -> uint8 (size, size, 3): EXIF orientation applied, transparency composited onto
    black, 16-bit and float pixels scaled (not clipped) to 8 bits, centre-cropped, resized (bicubic).
    Anything Pillow cannot decode completely, or more than MAX_PIXELS pixels, raises BadImage."""
    import warnings
    from PIL import Image, ImageOps, UnidentifiedImageError
    try:
        if path.stat().st_size == 0:
            raise BadImage("empty file")
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:  # reads the header only
                if im.width * im.height > MAX_PIXELS:
                    raise BadImage(f"{im.width}x{im.height} pixels, over the limit of {MAX_PIXELS} "
                                   f"(a decompression bomb?)")
                im.load()  # decodes everything now: a truncated file fails here, not later
                im = _to_rgb(ImageOps.exif_transpose(im))
                return np.asarray(ImageOps.fit(im, (size, size), Image.Resampling.BICUBIC), np.uint8)
    except BadImage:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise BadImage(f"decompression bomb ({e})".replace("\n", " ")) from None
    except UnidentifiedImageError:
        raise BadImage("not an image file Pillow can read") from None
    except Exception as e:  # Pillow raises many types (OSError, SyntaxError, ...) for broken data
        raise BadImage(f"corrupt or truncated ({type(e).__name__}: {e})".replace("\n", " ")) from None


def _to_rgb(im):
    """Any Pillow mode -> RGB. 16-bit ("I;16*") maps 0..65535 linearly to 0..255; 32-bit int ("I")
    likewise when its values fit 16 bits (as when Pillow widens a 16-bit file), as-is when they fit
    8 bits, else min..max; float ("F") in [0, 1] is scaled by 255, else min..max."""
    from PIL import Image
    if im.mode.startswith("I") or im.mode == "F":
        a = np.asarray(im, dtype=np.float64)
        if not np.isfinite(a).all():
            raise BadImage("non-finite pixel values")
        lo, hi = a.min(), a.max()
        if im.mode.startswith("I;16") or (im.mode == "I" and lo >= 0 and 255 < hi <= 65535):
            lo, hi = 0.0, 65535.0
        elif im.mode == "F" and lo >= 0 and hi <= 1:
            lo, hi = 0.0, 1.0
        elif lo >= 0 and hi <= 255:
            lo, hi = 0.0, 255.0
        a = (a - lo) / max(hi - lo, 1e-12) * 255
        return Image.fromarray(a.round().clip(0, 255).astype(np.uint8)).convert("RGB")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info:
        rgba = im.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, (0, 0, 0, 255)), rgba).convert("RGB")
    return im.convert("RGB")


def resize(images: torch.Tensor, size: int | None) -> torch.Tensor:
    """Resize uint8 (N, C, H, W) to (size, size): bilinear with antialias, the one rule genlab uses."""
    if size is None or images.shape[-2:] == (size, size):
        return images
    out = []
    for chunk in images.split(4096):
        y = F.interpolate(chunk.float(), size=(size, size), mode="bilinear", antialias=True,
                          align_corners=False)
        out.append(y.round_().clamp_(0, 255).to(torch.uint8))
    return torch.cat(out)
