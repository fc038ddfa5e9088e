"""Receive a multipart upload straight to a temporary file, cutting it off at the size cap.

Starlette's own form parsing reads the whole body before a handler runs; here the cap is enforced
while the bytes arrive, so an oversized upload never fills memory or disk.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request

from intake.errors import ApiError
from intake.limits import limit_error

FORM_OVERHEAD = 64 * 1024  # room for multipart headers and the small text fields
DRAIN_LIMIT = 64 * 1024 * 1024  # read (and drop) this much of an oversized body so the client sees the 413


@dataclass
class Upload:
    path: Path | None = None  # the `file` part, on disk
    filename: str | None = None
    size: int = 0
    fields: dict[str, str] = field(default_factory=dict)

    def discard(self) -> None:
        if self.path is not None:
            self.path.unlink(missing_ok=True)


def too_large(cap: int) -> ApiError:
    return ApiError(413, "too_large", f"upload exceeds the limit of {cap} bytes",
                    [{"rule": "max_upload_bytes", "value": cap, "message": f"the zip may be at most {cap} bytes"}])


async def receive_upload(request: Request, cap: int, tmp_dir: Path, max_parts: int = 8,
                         max_header_bytes: int = 16 * 1024) -> Upload:
    """Parse the multipart body; the `file` part goes to a temp file in ``tmp_dir``.

    At most ``max_parts`` parts, each with at most ``max_header_bytes`` of part headers; every text
    field at most FORM_OVERHEAD bytes. A body beyond these is refused naming the limit and its value."""
    ctype, params = parse_options_header(request.headers.get("content-type", ""))
    if ctype != b"multipart/form-data" or b"boundary" not in params:
        raise ApiError(415, "unsupported_media_type", "send the zip as multipart/form-data in the field `file`")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > cap + FORM_OVERHEAD:
        await _drain(request, int(declared))
        raise too_large(cap)

    tmp_dir.mkdir(parents=True, exist_ok=True)
    upload = Upload()
    state = {"name": None, "filename": None, "header": b"", "headers": {}, "value": bytearray(), "fh": None,
             "over": False, "parts": 0, "header_bytes": 0}

    def count_header(n: int) -> None:
        state["header_bytes"] += n
        if state["header_bytes"] > max_header_bytes:
            raise limit_error(431, "part_headers_too_large", "max_header_bytes", max_header_bytes,
                              "the headers of one multipart part")

    def on_part_begin():
        state["parts"] += 1
        state["header_bytes"] = 0
        if state["parts"] > max_parts:
            raise ApiError(413, "too_many_parts", f"the multipart body has more than {max_parts} parts",
                           [{"rule": "max_multipart_parts", "value": max_parts,
                             "message": f"send at most {max_parts} parts (the zip in `file`, and `challenge`)"}])

    def on_header_field(data, start, end):
        count_header(end - start)
        state["header"] += data[start:end]

    def on_header_value(data, start, end):
        count_header(end - start)
        key = state["header"].lower()
        state["headers"][key] = state["headers"].get(key, b"") + data[start:end]

    def on_header_end():
        state["header"] = b""

    def on_headers_finished():
        _, disp = parse_options_header(state["headers"].get(b"content-disposition", b""))
        state["name"] = disp.get(b"name", b"").decode("utf-8", "replace")
        filename = disp.get(b"filename")
        if state["name"] == "file" and upload.path is None:
            fd, name = tempfile.mkstemp(prefix="upload-", suffix=".zip", dir=tmp_dir)
            state["fh"] = os.fdopen(fd, "wb")
            upload.path = Path(name)
            upload.filename = filename.decode("utf-8", "replace") if filename else None

    def on_part_data(data, start, end):
        chunk = data[start:end]
        if state["fh"] is not None:
            upload.size += len(chunk)
            if upload.size > cap:
                state["over"] = True
            else:
                state["fh"].write(chunk)
        elif state["name"] and len(state["value"]) + len(chunk) <= FORM_OVERHEAD:
            state["value"] += chunk

    def on_part_end():
        if state["fh"] is not None:
            state["fh"].close()
            state["fh"] = None
        elif state["name"]:
            upload.fields[state["name"]] = state["value"].decode("utf-8", "replace")
        state.update(name=None, headers={}, value=bytearray())

    parser = MultipartParser(params[b"boundary"], {
        "on_part_begin": on_part_begin, "on_header_field": on_header_field, "on_header_value": on_header_value, "on_header_end": on_header_end,
        "on_headers_finished": on_headers_finished, "on_part_data": on_part_data, "on_part_end": on_part_end},
        max_header_size=max_header_bytes)
    received = 0
    try:
        async for chunk in request.stream():
            received += len(chunk)
            if state["over"]:
                if received > DRAIN_LIMIT:
                    break
                continue
            parser.write(chunk)
        if not state["over"]:
            parser.finalize()
    except ClientDisconnect:
        upload.discard()
        raise ApiError(400, "incomplete_upload", "the client went away before the upload finished")
    except ApiError:  # a limit: the parser's callbacks and the body counter name it themselves
        upload.discard()
        raise
    except MultipartParseError as exc:
        upload.discard()
        if "header" in str(exc).lower():  # the parser's own bounds on one part's headers
            raise limit_error(431, "part_headers_too_large", "max_header_bytes", max_header_bytes,
                              f"the headers of one multipart part ({exc})") from None
        raise ApiError(400, "bad_multipart", f"the multipart body could not be parsed: {exc}")
    except Exception as exc:  # the multipart parser's own errors
        upload.discard()
        raise ApiError(400, "bad_multipart", f"the multipart body could not be parsed: {exc}")
    finally:
        if state["fh"] is not None:
            state["fh"].close()
    if state["over"]:
        upload.discard()
        raise too_large(cap)
    if upload.path is None:
        raise ApiError(422, "missing_file", "no zip in the multipart field `file`",
                       [{"rule": "file", "value": None, "message": "send the zip in the field `file`"}])
    return upload


async def _drain(request: Request, declared: int) -> None:
    if declared > DRAIN_LIMIT:
        return  # not worth reading; the connection closes after the answer
    try:
        async for _ in request.stream():
            pass
    except ClientDisconnect:
        pass
