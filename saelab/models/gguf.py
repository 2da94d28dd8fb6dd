"""Read a GGUF file's header before anything loads it: its architecture, and whether the file is whole.

`check(path)` answers in milliseconds, before `transformers` dequantises anything: a file of an
architecture we cannot convert is refused with the supported list (BadInputError), and a file that is not
GGUF, is truncated, or has a garbled header gets one line (CorruptFileError) instead of whatever the
`transformers` reader would raise deep inside (a UnicodeDecodeError, a numpy reshape error).

Layout (GGUF v2/v3, little- or big-endian): b"GGUF", version u32, tensor count u64, metadata count u64;
metadata entries (key string, value type u32, value); tensor infos (name string, n_dims u32, dims u64 ×
n_dims, ggml type u32, offset u64); then tensor data from the first multiple of `general.alignment`
(default 32). A string is a u64 byte length followed by UTF-8 bytes.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from saelab.errors import BadInputError, CorruptFileError

MAGIC = b"GGUF"
_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_STRING, _ARRAY = 8, 9
_MAX_DIMS = 8


@dataclass
class GGUFHeader:
    """What `read_header` found: the metadata scalars (arrays are skipped), tensor infos and sizes."""

    version: int
    architecture: str
    metadata: dict[str, Any] = field(default_factory=dict)
    tensors: list[tuple[str, tuple[int, ...], int, int]] = field(default_factory=list)  # name, dims, type, offset
    data_start: int = 0
    file_size: int = 0


class _Truncated(Exception):
    pass


class _Cursor:
    def __init__(self, buf, endian: str) -> None:
        self.buf, self.pos, self.endian = buf, 0, endian

    def take(self, fmt: str) -> Any:
        size = struct.calcsize(fmt)
        if self.pos + size > len(self.buf):
            raise _Truncated
        (value,) = struct.unpack_from(self.endian + fmt, self.buf, self.pos)
        self.pos += size
        return value

    def skip(self, n: int) -> None:
        if n < 0 or self.pos + n > len(self.buf):
            raise _Truncated
        self.pos += n

    def string(self, keep: bool = True) -> str:
        n = self.take("Q")
        start = self.pos
        self.skip(n)
        if not keep:
            return ""
        try:
            return bytes(self.buf[start : start + n]).decode("utf-8")
        except UnicodeDecodeError as err:
            raise CorruptFileError(f"a text field at byte {start} is not valid UTF-8") from err

    def value(self, kind: int, keep: bool = True) -> Any:
        if kind in _SCALARS:
            return self.take(_SCALARS[kind])
        if kind == _STRING:
            return self.string(keep)
        if kind == _ARRAY:
            item, count = self.take("I"), self.take("Q")
            if item in _SCALARS:
                self.skip(count * struct.calcsize(_SCALARS[item]))
            else:
                if count > len(self.buf):  # each item takes at least one byte
                    raise _Truncated
                for _ in range(count):
                    self.value(item, keep=False)
            return None
        raise CorruptFileError(f"unknown metadata value type {kind} at byte {self.pos - 4}")


def _tensor_bytes(dims: tuple[int, ...], ggml_type: int) -> int | None:
    """Bytes of one tensor's data, or None when the `gguf` package (or its table) does not know the type."""
    try:
        from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType
    except ImportError:
        return None
    try:
        block, type_size = GGML_QUANT_SIZES[GGMLQuantizationType(ggml_type)]
    except (ValueError, KeyError):
        return None
    n = 1
    for d in dims:
        n *= d
    return n // block * type_size


def check(path: Path) -> GGUFHeader:
    """Parse the header, metadata and tensor infos of `path`: BadInputError for an architecture we cannot
    load (raised as soon as `general.architecture` is read), CorruptFileError if any of it is wrong."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            size = path.stat().st_size
            if size < 24:
                raise CorruptFileError(f"{path.name} is {size} bytes, too short for a GGUF header (24 bytes)")
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
                return _parse(buf, size, path.name)
    except CorruptFileError as err:
        msg = str(err)
        if msg.startswith(path.name):
            raise
        raise CorruptFileError(f"{path.name} is not a readable GGUF file: {msg}") from err
    except OSError as err:
        raise CorruptFileError(f"Could not read {path}: {err.strerror or err}") from err


def _parse(buf, size: int, name: str) -> GGUFHeader:
    if bytes(buf[:4]) != MAGIC:
        raise CorruptFileError(
            f"{name} is not a GGUF file (it starts with {bytes(buf[:4])!r}, not {MAGIC!r}); "
            "pass a .gguf model file or a Hugging Face model folder"
        )
    (version,) = struct.unpack_from("<I", buf, 4)
    endian = "<"
    if version & 0xFFFF == 0:  # a big-endian file reads as a huge little-endian version
        endian, (version,) = ">", struct.unpack_from(">I", buf, 4)
    if version not in (2, 3):
        raise CorruptFileError(f"{name} is GGUF version {version}; only versions 2 and 3 can be read")
    cur = _Cursor(buf, endian)
    cur.pos = 8
    where = "header"
    try:
        n_tensors, n_meta = cur.take("Q"), cur.take("Q")
        metadata: dict[str, Any] = {}
        where = "metadata"
        for _ in range(n_meta):
            key = cur.string()
            value = cur.value(cur.take("I"))
            if value is not None:
                metadata[key] = value
        architecture = metadata.get("general.architecture")
        if not isinstance(architecture, str):
            raise CorruptFileError("it has no general.architecture entry")
        check_architecture(architecture, name)  # refuse before reading further: the rest may be huge
        where = "tensor list"
        if n_tensors > size:
            raise _Truncated
        tensors = []
        for _ in range(n_tensors):
            t_name = cur.string()
            n_dims = cur.take("I")
            if n_dims > _MAX_DIMS:
                raise CorruptFileError(f"tensor {t_name!r} claims {n_dims} dimensions")
            dims = tuple(cur.take("Q") for _ in range(n_dims))
            tensors.append((t_name, dims, cur.take("I"), cur.take("Q")))
    except _Truncated:
        raise CorruptFileError(
            f"{name} is truncated or garbled: its {where} runs past the end of the file ({size:,} bytes)"
        ) from None
    alignment = int(metadata.get("general.alignment", 32) or 32)
    data_start = -(-cur.pos // alignment) * alignment
    header = GGUFHeader(version, architecture, metadata, tensors, data_start, size)
    for t_name, dims, ggml_type, offset in tensors:
        nbytes = _tensor_bytes(dims, ggml_type)
        end = data_start + offset + (nbytes or 0)
        if end > size:
            raise CorruptFileError(
                f"{name} is truncated: tensor {t_name!r} needs bytes up to {end:,} but the file has {size:,}"
            )
    return header


def check_architecture(architecture: str, name: str) -> str:
    """The HF model_type for a GGUF `general.architecture`, or BadInputError naming the supported ones."""
    from saelab.models.convert import GGUF_ARCHITECTURES

    if architecture not in GGUF_ARCHITECTURES:
        raise BadInputError(
            f"{name} is a {architecture!r} GGUF, which SAE Lab cannot load; supported GGUF architectures: "
            f"{', '.join(sorted(GGUF_ARCHITECTURES))} (gemma and gpt_neox load from a Hugging Face folder)."
        )
    return GGUF_ARCHITECTURES[architecture]


__all__ = ["GGUFHeader", "check", "check_architecture"]
