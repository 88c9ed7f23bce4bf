"""KServe's V2 binary-data extension, parsed here: KServe 0.21 garbles raw BYTES (audio files)."""

from __future__ import annotations

import json
import struct

import numpy as np
from kserve.errors import InvalidInput
from kserve.protocol.dataplane import DataPlane
from kserve.protocol.infer_type import InferInput, InferRequest, RequestedOutput

from tympan.serving.inputs import FLOATS

BINARY_HEADER = "inference-header-content-length"


def parse_binary_request(body: bytes, headers: dict, model_name: str) -> InferRequest:
    """A V2 request sent as JSON followed by raw tensor bytes (the binary-data extension).

    KServe 0.21 turns raw BYTES elements back into UTF-8 text, which fails (500) for audio files,
    and answers malformed framing with a KeyError (500). Here BYTES elements stay `bytes`, and
    framing errors are 400s. A JSON body sent without a JSON content type is read as JSON.
    """
    size = headers.get(BINARY_HEADER)
    try:
        size = len(body) if size is None else int(size)
        if not 0 < size <= len(body):
            raise ValueError(size)
        header = json.loads(body[:size])
    except (ValueError, UnicodeDecodeError):
        raise InvalidInput(
            f"V2 body is not JSON: send Content-Type: application/json, or binary data with an {BINARY_HEADER} header"
        ) from None
    if not isinstance(header, dict) or not isinstance(header.get("inputs"), list):
        raise InvalidInput("a V2 body needs 'inputs': a list of tensors")
    inputs, offset = [], size
    for i, spec in enumerate(header["inputs"]):
        tensor, offset = binary_tensor(spec, body, offset, f"inputs[{i}]")
        inputs.append(tensor)
    return InferRequest(
        model_name=model_name,
        infer_inputs=inputs,
        request_id=header.get("id"),
        parameters=object_or_none(header.get("parameters"), "parameters"),
        request_outputs=requested_outputs(header.get("outputs")),
    )


def object_or_none(value, where: str) -> dict | None:
    if value is not None and not isinstance(value, dict):
        raise InvalidInput(f"'{where}' must be a JSON object")
    return value


def requested_outputs(outputs) -> list[RequestedOutput] | None:
    if outputs is None:
        return None
    if not isinstance(outputs, list) or not all(isinstance(o, dict) and "name" in o for o in outputs):
        raise InvalidInput("'outputs' must be a list of {'name': ...} objects")
    return [RequestedOutput(o["name"], object_or_none(o.get("parameters"), "outputs.parameters")) for o in outputs]


def binary_tensor(spec, body: bytes, offset: int, where: str) -> tuple[InferInput, int]:
    """One input tensor of a binary request, and the offset of the next tensor's bytes."""
    if not isinstance(spec, dict) or not {"name", "shape", "datatype"} <= set(spec):
        raise InvalidInput(f"{where}: a tensor needs 'name', 'shape' and 'datatype'")
    shape, datatype = spec["shape"], str(spec["datatype"]).upper()
    parameters = object_or_none(spec.get("parameters"), f"{where}.parameters") or {}
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise InvalidInput(f"{where}: shape must be a list of non-negative integers, got {shape!r}")
    if "data" in spec:
        return InferInput(spec["name"], shape, datatype, spec["data"], parameters), offset
    size = parameters.get("binary_data_size")
    if not isinstance(size, int) or size < 0 or offset + size > len(body):
        raise InvalidInput(f"{where}: no 'data', and no binary_data_size that fits the bytes after the JSON")
    raw = body[offset : offset + size]
    if datatype == "BYTES":
        data = split_bytes(raw, where)
    elif datatype in FLOATS and size % np.dtype(FLOATS[datatype]).itemsize == 0:
        data = np.frombuffer(raw, dtype=FLOATS[datatype])
    else:
        data = raw  # any other datatype is refused with its name when the clips are read
    return InferInput(spec["name"], shape, datatype, data, parameters), offset + size


def split_bytes(raw: bytes, where: str) -> list[bytes]:
    """The elements of a serialised BYTES tensor: each a 4-byte little-endian length, then the bytes."""
    items, offset = [], 0
    while offset < len(raw):
        length = struct.unpack_from("<I", raw, offset)[0] if offset + 4 <= len(raw) else len(raw)
        if offset + 4 + length > len(raw):
            raise InvalidInput(f"{where}: truncated BYTES tensor (an element is longer than the bytes sent)")
        items.append(raw[offset + 4 : offset + 4 + length])
        offset += 4 + length
    return items


class BinaryAwareDataPlane(DataPlane):
    """KServe's data plane, with binary-data V2 requests parsed by `parse_binary_request`."""

    def decode_inference_request(self, body, headers, model_name):
        if isinstance(body, bytes):
            return parse_binary_request(body, headers, model_name)
        return super().decode_inference_request(body, headers, model_name)
