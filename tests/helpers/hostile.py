"""Forged files a hostile or careless user could leave in a run folder or a data folder: small on
disk, huge once read naively. Each is real (the naive reader does expand it), built without
ever holding the expanded bytes in memory."""
from __future__ import annotations

import io
import struct
import zipfile
import zlib
from pathlib import Path
from typing import Union

import numpy as np
import torch

_BLOCK = 64 << 20  # zeros compressed once, repeated


def _deflate_zeros(total: int, prefix: bytes = b"") -> tuple[bytes, int]:
    """(raw deflate stream of ``prefix`` then ``total`` zero bytes, crc32 of them). Each
    compressed segment ends in a full flush, so it stands alone and can be repeated."""
    def segment(data: bytes) -> bytes:
        c = zlib.compressobj(6, zlib.DEFLATED, -15)
        return c.compress(data) + c.flush(zlib.Z_FULL_FLUSH)

    blocks, rest = divmod(total, _BLOCK)
    stream = segment(prefix) + segment(bytes(_BLOCK)) * blocks + segment(bytes(rest)) + b"\x03\x00"
    crc = zlib.crc32(prefix)
    zeros = bytes(_BLOCK)
    for _ in range(blocks):
        crc = zlib.crc32(zeros, crc)
    return stream, zlib.crc32(bytes(rest), crc)


def write_zip(path: Path, members: list[tuple[str, Union[bytes, tuple[bytes, int, int]]]]) -> Path:
    """A zip of ``members``: bytes are stored, (raw deflate, crc, size) entries are deflated
    (sizes below 4 GiB: no zip64)."""
    out, central = io.BytesIO(), []
    for name, data in members:
        nb = name.encode()
        if isinstance(data, tuple):
            raw, crc, size, method = *data, 8
        else:
            raw, crc, size, method = data, zlib.crc32(data), len(data), 0
        offset = out.tell()
        out.write(struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, method, 0, 0, crc, len(raw), size,
                              len(nb), 0) + nb + raw)
        central.append(struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, method, 0, 0, crc,
                                   len(raw), size, len(nb), 0, 0, 0, 0, 0, offset) + nb)
    start = out.tell()
    for entry in central:
        out.write(entry)
    out.write(struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(central), len(central),
                          out.tell() - start, start, 0))
    path.write_bytes(out.getvalue())
    return path


def _npy_header(shape: tuple, descr: str) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False, "shape": shape})
    return buf.getvalue()


def _npz_members(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as z:
        return {i.filename: z.read(i) for i in z.infolist()}


def predictions_declaring(path: Path, shape: tuple) -> Path:
    """``path`` (a predictions.npz) with its labels replaced by a header declaring ``shape``
    int64 and no data: the issue's 841-byte file that asked numpy for 37 GiB."""
    members = _npz_members(path)
    members["labels.npy"] = _npy_header(shape, "<i8")
    return write_zip(path, list(members.items()))


def predictions_deflate_bomb(path: Path, nbytes: int) -> Path:
    """``path`` with its labels replaced by ``nbytes`` of zeros declared as such, deflated to a
    few MB: numpy decompresses all of it before any shape check."""
    members = _npz_members(path)
    header = _npy_header((nbytes // 8,), "<i8")
    stream, crc = _deflate_zeros(nbytes, header)
    members["labels.npy"] = (stream, crc, len(header) + nbytes)
    return write_zip(path, list(members.items()))


def torch_zip_bomb(path: Path, nbytes: int) -> Path:
    """A torch file whose one storage entry is ``nbytes`` of zeros, deflated: torch.load
    allocates all of it before noticing the size does not match."""
    torch.save({"features": torch.zeros(2), "labels": torch.zeros(2, dtype=torch.long), "classes": ["a"]}, path)
    members = _npz_members(path)
    entries = []
    for name, data in members.items():
        if name.endswith("data/0"):
            stream, crc = _deflate_zeros(nbytes)
            entries.append((name, (stream, crc, nbytes)))
        else:
            entries.append((name, data))
    return write_zip(path, entries)


def png_bomb(path: Path, width: int, height: int) -> Path:
    """A grey 8-bit PNG of ``width`` x ``height`` zero pixels, a few hundred kB on disk."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    n = height * (width + 1)  # each row: filter byte 0, then the pixels
    stream, _ = _deflate_zeros(n)
    adler = ((n % 65521) << 16) | 1  # adler32 of n zero bytes
    idat = b"\x78\x9c" + stream + struct.pack(">I", adler)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path
