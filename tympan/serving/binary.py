"""KServe's V2 binary-data extension, parsed here: KServe 0.21 garbles raw BYTES (audio files).
Framing is exact: each tensor's binary_data_size is what its shape and datatype take, and the
body ends where the last tensor's bytes end."""

from __future__ import annotations

import json
import math
import struct

import numpy as np
from kserve.errors import InvalidInput
from kserve.protocol.dataplane import DataPlane
from kserve.protocol.infer_type import InferInput, InferRequest, RequestedOutput
from kserve.protocol.rest.v2_datamodels import InferenceRequest

BINARY_HEADER = "inference-header-content-length"
# The protocol's datatypes; its strings are case-sensitive ("fp32" is none of them).
DATATYPES = {"BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64"}
DATATYPES |= {"FP16", "FP32", "FP64", "BF16", "BYTES"}


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
    if offset != len(body):
        raise InvalidInput(
            f"{len(body) - offset} bytes after the last tensor's binary data: each input's"
            " binary_data_size must add up to the bytes sent after the JSON header"
        )
    if not isinstance(header.get("id"), str | None):
        raise InvalidInput(f"'id' must be a string, got {header['id']!r}")
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
    name, shape, datatype = spec["name"], spec["shape"], check_datatype(spec["datatype"], where)
    parameters = object_or_none(spec.get("parameters"), f"{where}.parameters") or {}
    if not isinstance(name, str):
        raise InvalidInput(f"{where}: 'name' must be a string, got {name!r}")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise InvalidInput(f"{where}: shape must be a list of non-negative integers, got {shape!r}")
    size = parameters.get("binary_data_size")
    if "data" in spec:
        if size is not None:
            raise InvalidInput(f"input '{name}': both 'data' and a binary_data_size; send one of them")
        return InferInput(name, shape, datatype, spec["data"], parameters), offset
    if not isinstance(size, int) or isinstance(size, bool) or size < 0 or offset + size > len(body):
        raise InvalidInput(f"input '{name}': no 'data', and no binary_data_size that fits the bytes after the JSON")
    raw = body[offset : offset + size]
    if datatype == "BYTES":
        data = split_bytes(raw, f"input '{name}'")
    elif datatype == "FP32":
        if size != 4 * math.prod(shape):
            raise InvalidInput(
                f"input '{name}': binary_data_size is {size} bytes; FP32 of shape {shape} takes {4 * math.prod(shape)}"
            )
        data = np.frombuffer(raw, dtype="<f4")
    else:
        data = raw  # another datatype is refused, with its name, when the clips are read
    return InferInput(name, shape, datatype, data, parameters), offset + size


def check_datatype(datatype, where: str) -> str:
    if datatype not in DATATYPES:
        raise InvalidInput(f"{where}: {datatype!r} is not a datatype of the protocol (e.g. FP32, BYTES; upper case)")
    return datatype


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
        if isinstance(body, InferenceRequest):  # JSON; KServe upper-cases datatypes when it converts them
            for i, tensor in enumerate(body.inputs):
                check_datatype(tensor.datatype, f"inputs[{i}]")
        return super().decode_inference_request(body, headers, model_name)
