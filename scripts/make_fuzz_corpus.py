#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets (Tests/Fuzz/corpus/<target>/), for scripts/fuzz.sh.

Valid files are taken from Tests/Fixtures (written by make_format_fixtures.py and make_jpeg_fixtures.py)
or built here; each gets truncated and mutated variants. Deterministic: rerunning rewrites the same bytes.
"""
import json
import shutil
import struct
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIX = ROOT / "Tests" / "Fixtures"
OUT = ROOT / "Tests" / "Fuzz" / "corpus"


def write(target, name, data):
    path = OUT / target / name
    path.write_bytes(bytes(data))


def safetensors_bytes(header, data=b""):
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    return struct.pack("<Q", len(h)) + h + data


def npy_bytes(header_text, data=b"", major=1):
    body = header_text.encode("latin1")
    if major == 1:
        return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(body)) + body + data
    return b"\x93NUMPY" + bytes([major, 0]) + struct.pack("<I", len(body)) + body + data


def truncations(target, stem, data, cuts):
    for cut in cuts:
        if 0 <= cut < len(data):
            write(target, f"{stem}_cut{cut}", data[:cut])


def safetensors_corpus():
    for f in ["st_numpy_f16", "st_numpy_f32", "st_torch_dtypes", "st_torch_module_prefix"]:
        data = (FIX / "formats" / f"{f}.safetensors").read_bytes()
        write("safetensors", f, data)
        n = struct.unpack("<Q", data[:8])[0]
        truncations("safetensors", f, data, [7, 8, 8 + n // 2, 8 + n, len(data) - 1])
    for f in ["losses", "optimizers"]:
        write("safetensors", f, (FIX / f"{f}.safetensors").read_bytes())
    # WideResNet-style names, every dtype the reader converts, metadata, an empty and a scalar tensor.
    header, data = {"__metadata__": {"format": "pt"}}, b""
    for name, dtype, shape, size in [
        ("module.conv1.weight", "F32", [2, 1, 1, 1], 4), ("block1.layer.0.bn1.weight", "F16", [2], 2),
        ("block1.layer.0.bn1.bias", "BF16", [2], 2), ("block1.layer.0.bn1.running_mean", "F64", [2], 8),
        ("block1.layer.0.bn1.num_batches_tracked", "I64", [], 8), ("fc.bias", "I32", [1], 4),
        ("a.u8", "U8", [3], 1), ("a.i8", "I8", [1, 1], 1), ("a.i16", "I16", [1], 2), ("a.u16", "U16", [1], 2),
        ("a.u32", "U32", [1], 4), ("a.u64", "U64", [1], 8), ("a.bool", "BOOL", [2], 1), ("empty", "F32", [0, 3], 4),
    ]:
        n = 1
        for d in shape:
            n *= d
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + n * size]}
        data += bytes((7 * i + len(data)) % 251 for i in range(n * size))
    write("safetensors", "all_dtypes", safetensors_bytes(header, data))
    write("safetensors", "empty_header", safetensors_bytes({}))
    write("safetensors", "metadata_only", safetensors_bytes({"__metadata__": {"k": "v\u00e9\\n"}}))
    write("safetensors", "huge_shape", safetensors_bytes({"x": {"dtype": "F32", "shape": [4294967296, 4294967296],
                                                               "data_offsets": [0, 4]}}, b"\0" * 4))
    write("safetensors", "zero_dim_huge", safetensors_bytes({"x": {"dtype": "F32", "shape": [0, 9223372036854775807, 2],
                                                                  "data_offsets": [0, 0]}}))
    write("safetensors", "header_len_huge", struct.pack("<Q", 2**63) + b"{}")


def npy_corpus():
    for path in sorted((FIX / "formats").glob("npy_*.npy")):
        data = path.read_bytes()
        write("npy", path.stem, data)
    for stem in ["npy_dtypes_u1", "npy_versions_v2_f4"]:
        data = (FIX / "formats" / f"{stem}.npy").read_bytes()
        truncations("npy", stem, data, [6, 9, 11, 40, len(data) - 1])
    write("npy", "zero_rows_huge_row", npy_bytes("{'descr': '|u1', 'fortran_order': False, 'shape': (0, 4294967296, 4294967296, 3), }\n"))
    write("npy", "huge_shape", npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296), }\n", b"\0" * 8))
    write("npy", "nhwc_u8", npy_bytes("{'descr': '|u1', 'fortran_order': False, 'shape': (5, 2, 2, 3), }\n", bytes(range(60))))
    write("npy", "v3_utf8", npy_bytes("{'descr': '<i8', 'fortran_order': False, 'shape': (1,), }\n", b"\1" + b"\0" * 7, major=3))


def jpeg_corpus():
    keep = ["gray_q75_1x1", "gray_q75_17x13", "rgb420_q75_3x2", "rgb420_q75_17x13", "rgb422_q75_4x3", "rgb444_q50_1x1",
            "restart_blocks1_rgb444_17x13", "restart_blocks3_rgb420_40x40", "restart_rows1_gray_33x17",
            "extras_comment_exif_rgb420_24x24", "extras_keep_rgb_24x16", "extras_optimize_rgb422_40x24"]
    for stem in keep:
        write("jpeg", stem, (FIX / "jpeg" / f"{stem}.jpg").read_bytes())
    for path in sorted((FIX / "jpeg").glob("*.jpg")):
        if path.stem.startswith(("corrupt_", "unsupported_")) and path.stat().st_size > 0:
            write("jpeg", path.stem, path.read_bytes())
    data = (FIX / "jpeg" / "rgb420_q75_17x13.jpg").read_bytes()
    truncations("jpeg", "rgb420_q75_17x13", data, [2, 20, 200, 400, len(data) - 2])
    # The same image claiming 65535x65535 pixels (SOF0 height and width patched).
    sof = data.index(b"\xff\xc0")
    write("jpeg", "rgb420_claims_65535x65535", data[:sof + 5] + b"\xff\xff\xff\xff" + data[sof + 9:])


def cli_corpus():
    # First byte: 0...4 an argument vector for compare, run, list, inspect, predict; 5...9 a --config
    # file for the same commands; 10 a command line for `tta` itself. Arguments are NUL-separated.
    commands = ["compare", "run", "list", "inspect", "predict"]
    argv = {
        "compare": [["--dataset", "cifar10-c", "--methods", "tent,cotta", "--severity", "5,3", "--lr=1e-3"],
                    ["--methods", "tent,tent", "--samples-per-domain", "0"], ["--seed", "18446744073709551616"],
                    ["--corruptions", "fog, snow", "--order", "file", "--dirichlet", "0.1", "--episodic"]],
        "run": [["--method", "eata", "--source-data", "x", "--batch-size", "64", "--steps", "3"],
                ["--method", "tnet", "--optimizer", "sgd", "--momentum", "1.5", "--nesterov", "true"],
                ["--model", "wideresnet-28-10", "--threads", "0", "--quiet", "-h"]],
        "list": [[], ["methods"], ["models", "extra"], ["--format", "json"]],
        "inspect": [["model.safetensors"], ["a.npy", "b.npy"], ["--bogus"]],
        "predict": [["--weights", "w.safetensors", "--input", "x.npy", "--output", "y.npy", "--method", "tent"],
                    ["--weights", "w", "--input"], ["--model", "auto", "--batch-size=-1", "-5"]],
    }
    configs = [{"lr": 0.01, "methods": ["tent", "cotta"], "episodic": True, "severity": [5, 4]},
               {"method": "sar", "steps": 2, "seed": 3}, {"quiet": "yes", "lr": None, "x": {}}, [1, 2], "text"]
    for i, c in enumerate(commands):
        for j, args in enumerate(argv[c]):
            write("cli", f"args_{c}_{j}", bytes([i]) + b"\0".join(a.encode() for a in args))
        for j, cfg in enumerate(configs):
            write("cli", f"config_{c}_{j}", bytes([5 + i]) + json.dumps(cfg).encode())
        write("cli", f"config_{c}_broken", bytes([5 + i]) + b'{"lr": 0.0')
    for j, line in enumerate([["help", "compare"], ["--version"], ["comapre", "--lr", "1"], ["--help"], ["help", "nope"]]):
        write("cli", f"tta_{j}", bytes([10]) + b"\0".join(a.encode() for a in line))


def main():
    for target in ["safetensors", "npy", "jpeg", "cli"]:
        shutil.rmtree(OUT / target, ignore_errors=True)
        (OUT / target).mkdir(parents=True)
    safetensors_corpus()
    npy_corpus()
    jpeg_corpus()
    cli_corpus()


if __name__ == "__main__":
    main()
