"""Streaming safetensors writer and memory-mapped reader.

`safetensors.torch.save_file` turns every tensor into a bytes object before writing, so saving
holds a second copy of the weights; `load_file` reads everything into fresh memory. Here the
header is computed from shapes alone, tensors are written one at a time as they are produced,
and loading maps the file so weights are paged in on use.

Pages of a mapped file that a process has read count in its resident memory (RSS) like any other
memory, although the kernel can drop them at no cost. `page_out` tells it to (MADV_PAGEOUT) for
the tensors given: writing a finetuned model reads every base weight once, and without this the
untouched rest of, e.g., a 50k-row embedding would be paged in on top of the training peak.
Pages a process has modified (copy-on-write) are never lost: the kernel keeps or swaps them.

Format (https://github.com/huggingface/safetensors): 8-byte little-endian header length, a JSON
header `{name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {str: str}}` padded with
spaces to a multiple of 8, then the tensors' bytes back to back in header order.
"""

from __future__ import annotations

import ctypes
import errno
import json
import mmap
import os
import struct
import weakref
from pathlib import Path
from typing import Callable, Iterable, Optional

import torch

DTYPE_NAMES: dict[torch.dtype, str] = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
    torch.bool: "BOOL",
}
DTYPES: dict[str, torch.dtype] = {name: dtype for dtype, name in DTYPE_NAMES.items()}


MADV_PAGEOUT = getattr(mmap, "MADV_PAGEOUT", 21)  # Linux >= 5.4; Python's constant needs new headers

# (start address, length, the mapping) of every file load_mmap has mapped and is still alive
_MAPPINGS: list[tuple[int, int, "weakref.ref[mmap.mmap]"]] = []


def _register_mapping(buffer: mmap.mmap) -> None:
    anchor = ctypes.c_char.from_buffer(buffer)
    start = ctypes.addressof(anchor)
    del anchor  # a live ctypes view would keep the mapping from ever being closed
    _MAPPINGS[:] = [m for m in _MAPPINGS if m[2]() is not None]
    _MAPPINGS.append((start, len(buffer), weakref.ref(buffer)))


def page_out(tensors: Iterable[torch.Tensor]) -> int:
    """Drop the resident pages of those `tensors` that live in a mapped safetensors file (they are
    read back from the file if used again). Returns the bytes advised; 0 where the kernel cannot."""
    advised = 0
    for tensor in tensors:
        if tensor.device.type != "cpu" or tensor.numel() == 0:
            continue
        begin = tensor.data_ptr()
        if tensor.is_contiguous():
            end = begin + tensor.numel() * tensor.element_size()
        else:  # its whole storage: a strided view may reach anywhere in it
            storage = tensor.untyped_storage()
            begin, end = storage.data_ptr(), storage.data_ptr() + storage.nbytes()
        for start, length, ref in _MAPPINGS:
            buffer = ref()
            if buffer is None or not start <= begin < start + length:
                continue
            first = (begin - start) // mmap.PAGESIZE * mmap.PAGESIZE
            last = min(end - start, length)
            try:
                buffer.madvise(MADV_PAGEOUT, first, last - first)
            except (OSError, ValueError) as error:  # old kernel (EINVAL) or a closed mapping
                if isinstance(error, OSError) and error.errno not in (errno.EINVAL, errno.ENOSYS):
                    raise
                return advised
            advised += last - first
            break
    return advised


def _element_size(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def write_streaming(
    path: str | Path,
    specs: Iterable[tuple[str, tuple[int, ...], torch.dtype]],
    produce: Callable[[str], torch.Tensor],
    metadata: Optional[dict[str, str]] = None,
) -> dict[str, int]:
    """Write tensors named in `specs` (name, shape, dtype), calling `produce(name)` for each in turn.

    Written to `<path>.tmp` and renamed, so a crash never leaves a truncated file under `path`.
    Returns {"peak_tensor_bytes": ...}: the largest single tensor held at once (what streaming costs).
    """
    path = Path(path)
    specs = list(specs)
    header: dict[str, object] = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    offset = 0
    for name, shape, dtype in specs:
        nbytes = _element_size(dtype) * int(torch.Size(shape).numel())
        header[name] = {"dtype": DTYPE_NAMES[dtype], "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    header_bytes = json.dumps(header, separators=(",", ":")).encode()
    header_bytes += b" " * (-len(header_bytes) % 8)

    peak = 0
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(header_bytes)))
        f.write(header_bytes)
        for name, shape, dtype in specs:
            tensor = produce(name).detach().to(device="cpu", dtype=dtype).contiguous()
            if tuple(tensor.shape) != tuple(shape):
                raise ValueError(f"{name}: produced shape {tuple(tensor.shape)}, planned {tuple(shape)}")
            peak = max(peak, tensor.numel() * tensor.element_size())
            if tensor.numel():
                f.write(memoryview(tensor.reshape(-1).view(torch.uint8).numpy()))
                page_out([tensor])  # read once for writing: do not keep it resident (see top)
            del tensor
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return {"peak_tensor_bytes": peak}


def save_state_dict(path: str | Path, state_dict: dict[str, torch.Tensor], metadata: Optional[dict[str, str]] = None) -> None:
    """Write a state dict without copying it all first."""
    specs = [(name, tuple(t.shape), t.dtype) for name, t in state_dict.items()]
    write_streaming(path, specs, state_dict.__getitem__, metadata)


def read_header(path: str | Path) -> tuple[dict[str, dict], int]:
    """The JSON header (without __metadata__) and where the data section starts."""
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise ValueError(f"{path} is not a safetensors file (too short)")
        (n,) = struct.unpack("<Q", raw)
        header = json.loads(f.read(n))
    header.pop("__metadata__", None)
    return header, 8 + n


def load_mmap(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors backed by a private (copy-on-write) memory map of the file: no read until used."""
    header, start = read_header(path)
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            raise ValueError(f"{path} is empty")
        buffer = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
    _register_mapping(buffer)
    tensors = {}
    for name, info in header.items():
        dtype = DTYPES[info["dtype"]]
        begin, end = info["data_offsets"]
        count = (end - begin) // _element_size(dtype)
        if count == 0:
            tensors[name] = torch.empty(info["shape"], dtype=dtype)
            continue
        flat = torch.frombuffer(buffer, dtype=dtype, count=count, offset=start + begin)
        tensors[name] = flat.view(info["shape"])
    return tensors
