#!/usr/bin/env python3
"""Writes the small JPEG fixtures used by Tests/TTADataTests/JPEGTests.swift.

Run from anywhere:  python3 scripts/make_jpeg_fixtures.py
Needs Pillow (with its bundled libjpeg-turbo) and numpy only; nothing is downloaded.
Outputs go to Tests/Fixtures/jpeg/:
  - <name>.jpg, written by Pillow from a deterministic synthetic image (smooth gradients, a hard-edged
    disc, stripes, a little seeded noise), and
  - <name>.npy, Pillow's decoded pixels of that file (np.asarray(Image.open(f)); mode L gives
    (H, W), mode RGB gives (H, W, 3)), draft mode off,
  - hostile files (truncated, corrupted, or using features the Swift decoder refuses) with no .npy,
  - expected.json: for every .jpg, either {"pixels": "<name>.npy", "mode": "L" | "RGB"} or
    {"error": "<substring the Swift error message must contain>"}.
Every file name starts with the name of the function below that wrote it (minus "make_").
The output is deterministic for a given Pillow / libjpeg-turbo / numpy.
"""
import io
import json
import os

import numpy as np
from PIL import Image

OUT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "Tests", "Fixtures", "jpeg"))
EXPECTED = {}


def scene(h, w, seed):
    """A deterministic RGB image with smooth regions, hard edges, fine stripes and mild noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    r = 255 * (x + 0.5) / w
    g = 255 * (y + 0.5) / h
    b = 128 + 100 * np.sin(x / 3.0 + y / 5.0)
    cy, cx, rad = h * 0.55, w * 0.4, max(1.0, min(h, w) * 0.3)
    disc = (y - cy) ** 2 + (x - cx) ** 2 < rad ** 2
    r = np.where(disc, 230, r)
    g = np.where(disc, 40, g)
    b = np.where(disc, 60, b)
    stripes = (x.astype(int) // 2 + y.astype(int) // 3) % 2 == 0
    band = x > w * 0.75
    r = np.where(band & stripes, 10, r)
    g = np.where(band & stripes, 200, g)
    img = np.stack([r, g, b], axis=-1) + rng.normal(0, 6, size=(h, w, 3))
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def save_valid(name, img, **options):
    """Saves `img` (a PIL image) as <name>.jpg and Pillow's decoding of that file as <name>.npy."""
    path = os.path.join(OUT, name + ".jpg")
    img.save(path, "JPEG", **options)
    with Image.open(path) as decoded:
        mode = decoded.mode
        pixels = np.asarray(decoded)  # mode L or RGB; no draft, no conversion needed
    np.save(os.path.join(OUT, name + ".npy"), np.ascontiguousarray(pixels))
    EXPECTED[name + ".jpg"] = {"pixels": name + ".npy", "mode": mode, "shape": list(pixels.shape)}


def save_hostile(name, data, error):
    with open(os.path.join(OUT, name + ".jpg"), "wb") as f:
        f.write(data)
    EXPECTED[name + ".jpg"] = {"error": error}


def encode(img, **options):
    buf = io.BytesIO()
    img.save(buf, "JPEG", **options)
    return buf.getvalue()


def rgb(h, w, seed):
    return Image.fromarray(scene(h, w, seed), "RGB")


def gray(h, w, seed):
    return rgb(h, w, seed).convert("L")


def find_marker(data, code, start=2):
    """Byte offset of the first 0xFF <code> marker at or after `start` (segment-aware walk)."""
    i = start
    while i + 4 <= len(data):
        assert data[i] == 0xFF, f"not at a marker at {i}"
        m = data[i + 1]
        if m == code:
            return i
        if m == 0xDA:
            raise ValueError("marker not found before SOS")
        i += 2 + int.from_bytes(data[i + 2:i + 4], "big")
    raise ValueError("marker not found")


# ---------------------------------------------------------------- valid files (decoded by Pillow)

def make_gray():
    """Grayscale (one component) at several qualities and sizes, including 1x1 and odd sizes."""
    save_valid("gray_q50_32x24", gray(24, 32, 1), quality=50)
    save_valid("gray_q75_17x13", gray(13, 17, 2), quality=75)
    save_valid("gray_q95_33x65", gray(65, 33, 3), quality=95)
    save_valid("gray_q100_40x40", gray(40, 40, 4), quality=100)
    save_valid("gray_q75_1x1", gray(1, 1, 5), quality=75)


def make_rgb444():
    """YCbCr 4:4:4 (no chroma subsampling)."""
    save_valid("rgb444_q75_48x40", rgb(40, 48, 10), quality=75, subsampling=0)
    save_valid("rgb444_q100_17x13", rgb(13, 17, 11), quality=100, subsampling=0)
    save_valid("rgb444_q50_1x1", rgb(1, 1, 12), quality=50, subsampling=0)


def make_rgb422():
    """YCbCr 4:2:2 (chroma halved horizontally: h2v1 fancy upsampling)."""
    save_valid("rgb422_q75_48x40", rgb(40, 48, 20), quality=75, subsampling=1)
    save_valid("rgb422_q95_33x65", rgb(65, 33, 21), quality=95, subsampling=1)
    save_valid("rgb422_q50_17x13", rgb(13, 17, 22), quality=50, subsampling=1)
    save_valid("rgb422_q75_4x3", rgb(3, 4, 23), quality=75, subsampling=1)  # chroma 2 wide: plain replication


def make_rgb420():
    """YCbCr 4:2:0 (Pillow's default: h2v2 fancy upsampling), all qualities, odd sizes."""
    save_valid("rgb420_q50_64x48", rgb(48, 64, 30), quality=50, subsampling=2)
    save_valid("rgb420_q75_64x48", rgb(48, 64, 31), quality=75, subsampling=2)
    save_valid("rgb420_q95_64x48", rgb(48, 64, 32), quality=95, subsampling=2)
    save_valid("rgb420_q100_64x48", rgb(48, 64, 33), quality=100, subsampling=2)
    save_valid("rgb420_q75_17x13", rgb(13, 17, 34), quality=75, subsampling=2)
    save_valid("rgb420_q75_33x65", rgb(65, 33, 35), quality=75, subsampling=2)
    save_valid("rgb420_q75_1x1", rgb(1, 1, 36), quality=75, subsampling=2)
    save_valid("rgb420_q75_3x2", rgb(2, 3, 37), quality=75, subsampling=2)
    save_valid("rgb420_q85_224x16", rgb(16, 224, 38), quality=85, optimize=True)  # ImageNet-C style


def make_restart():
    """Restart intervals (DRI + RSTn markers), in MCUs and in MCU rows."""
    save_valid("restart_blocks3_rgb420_40x40", rgb(40, 40, 40), quality=75, restart_marker_blocks=3)
    save_valid("restart_rows1_gray_33x17", gray(17, 33, 41), quality=75, restart_marker_rows=1)
    save_valid("restart_blocks1_rgb444_17x13", rgb(13, 17, 42), quality=90, subsampling=0, restart_marker_blocks=1)


def make_extras():
    """APPn/COM segments to skip, optimized Huffman tables, and an Adobe (APP14) RGB file."""
    exif = Image.Exif()
    exif[0x010E] = "synthetic test image"
    save_valid("extras_comment_exif_rgb420_24x24", rgb(24, 24, 50), quality=80, comment=b"made by make_jpeg_fixtures.py",
               exif=exif.tobytes(), dpi=(72, 72))
    save_valid("extras_optimize_rgb422_40x24", rgb(24, 40, 51), quality=70, subsampling=1, optimize=True)
    save_valid("extras_keep_rgb_24x16", rgb(16, 24, 52), quality=90, subsampling=0, keep_rgb=True)


# ---------------------------------------------------------------- hostile files (refused)

def make_unsupported():
    """Valid JPEGs using features the decoder refuses: progressive, CMYK, arithmetic, 12-bit, lossless."""
    save_hostile("unsupported_progressive", encode(rgb(24, 24, 60), quality=75, progressive=True), "progressive")
    cmyk = Image.fromarray(scene(16, 16, 61), "RGB").convert("CMYK")
    save_hostile("unsupported_cmyk", encode(cmyk, quality=75), "4 components")
    base = encode(rgb(16, 16, 62), quality=75)
    sof = find_marker(base, 0xC0)
    arith = bytearray(base)
    arith[sof + 1] = 0xC9  # SOF9: extended sequential, arithmetic coding
    save_hostile("unsupported_arithmetic", bytes(arith), "arithmetic")
    twelve = bytearray(base)
    twelve[sof + 4] = 12  # sample precision
    save_hostile("unsupported_12bit", bytes(twelve), "12-bit")
    lossless = bytearray(base)
    lossless[sof + 1] = 0xC3  # SOF3: lossless
    save_hostile("unsupported_lossless", bytes(lossless), "lossless")


def make_corrupt():
    """Truncated and corrupted copies of a valid 4:2:0 file (and non-JPEG data)."""
    base = encode(rgb(32, 32, 70), quality=75)
    sos = find_marker(base, 0xDA)
    scan = sos + 2 + int.from_bytes(base[sos + 2:sos + 4], "big")
    save_hostile("corrupt_not_jpeg", b"GIF89a" + bytes(100), "not a JPEG")
    save_hostile("corrupt_empty", b"", "not a JPEG")
    save_hostile("corrupt_truncated_header", base[:60], "truncated")
    save_hostile("corrupt_truncated_scan", base[:scan + (len(base) - scan) // 2], "truncated")
    save_hostile("corrupt_no_scan", base[:sos] + b"\xff\xd9", "no scan")
    # All-ones bits (0xFF 0x00 stuffed) are never a valid Huffman code.
    save_hostile("corrupt_bad_huffman_code", base[:scan] + b"\xff\x00" * 200 + b"\xff\xd9", "Huffman")
    dht = find_marker(base, 0xC4)
    bad_dht = bytearray(base)
    bad_dht[dht + 5:dht + 21] = bytes([0, 255, 255] + [0] * 13)  # 510 codes: more than 16 bits can hold
    save_hostile("corrupt_dht_counts", bytes(bad_dht), "DHT")
    overfull = bytearray(base)
    assert sum(base[dht + 5:dht + 21]) == 12  # the standard luminance DC table
    overfull[dht + 5:dht + 21] = bytes([3, 9] + [0] * 14)  # 3 one-bit codes cannot exist
    save_hostile("corrupt_dht_overfull", bytes(overfull), "cannot all be distinct")
    sof = find_marker(base, 0xC0)
    bad_len = bytearray(base)
    bad_len[sof + 2:sof + 4] = (60000).to_bytes(2, "big")
    save_hostile("corrupt_segment_length", bytes(bad_len), "SOF0")
    zero = bytearray(base)
    zero[sof + 5:sof + 7] = (0).to_bytes(2, "big")  # height 0 (DNL is not supported)
    save_hostile("corrupt_zero_height", bytes(zero), "height")
    bad_sampling = bytearray(base)
    bad_sampling[sof + 11] = 0x55  # luma sampling factors 5x5
    save_hostile("corrupt_sampling", bytes(bad_sampling), "sampling")
    no_table = bytearray(base)
    no_table[sof + 12] = 3  # luma quantization table 3 is never defined
    save_hostile("corrupt_missing_qtable", bytes(no_table), "quantization table")
    rst = encode(rgb(32, 32, 71), quality=75, restart_marker_blocks=1)
    i = rst.find(b"\xff\xd1")
    wrong = bytearray(rst)
    wrong[i + 1] = 0xD5
    save_hostile("corrupt_wrong_restart", bytes(wrong), "restart")


def main():
    os.makedirs(OUT, exist_ok=True)
    for f in os.listdir(OUT):
        os.remove(os.path.join(OUT, f))
    for make in (make_gray, make_rgb444, make_rgb422, make_rgb420, make_restart, make_extras, make_unsupported,
                 make_corrupt):
        make()
    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump(EXPECTED, f, indent=1, sort_keys=True)
        f.write("\n")
    total = sum(os.path.getsize(os.path.join(OUT, f)) for f in os.listdir(OUT))
    print(f"wrote {len(os.listdir(OUT))} files ({total} bytes) to {OUT}")


if __name__ == "__main__":
    main()
