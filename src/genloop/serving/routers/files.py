"""``/v1/files``: JSON Lines uploads for tuning (OpenAI's ``files.create``), listed, read, deleted.

An upload is ``multipart/form-data`` with a ``file`` part and a ``purpose`` field, as OpenAI's
clients send it. The body is fed chunk by chunk, as it streams in, to python-multipart's
streaming parser and refused past the limit (``ServeConfig.max_file_bytes`` for the file, plus
room for the form around it), so an oversized upload is never held whole nor written; the file
must then be JSON Lines (one JSON object per line), not empty, and at most ``max_file_lines``
lines. Only then is it written, atomically, and its row added. Every refusal is a 400 naming the
field (and the line), with nothing written.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import Response
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.concurrency import run_in_threadpool

from genloop.atomic import atomic_write_bytes
from genloop.config import settings
from genloop.errors import InvalidInput
from genloop.serving.deps import CallerDep, StateDep, WriterDep
from genloop.serving.schemas import errors
from genloop.serving.tuning import BadField, FileDeleted, FileList, FileObject, file_object
from genloop.store.jobs import FILE_PURPOSES, new_file_id

router = APIRouter(prefix="/v1", tags=["files"], responses=errors(400, 401, 403, 404, 429))

FileId = Annotated[str, PathParam(pattern=r"^file-[0-9a-f]{1,64}$", description="a file's id")]
FORM_ROOM = 64 * 1024  # the multipart form around the file: boundaries, headers, the purpose


class _Form:
    """python-multipart's streaming parser fed chunk by chunk: each part's name, file name and
    bytes, a part over ``max_part`` bytes refused as it arrives (so none is held past the limit)."""

    def __init__(self, boundary: bytes, max_part: int) -> None:
        self.max_part, self.ended = max_part, False
        self.parts: dict[str, tuple[str | None, bytes]] = {}
        self._field, self._value = bytearray(), bytearray()
        self._name: str | None = None
        self._filename: str | None = None
        self._data = bytearray()
        try:
            self.parser = MultipartParser(boundary, {
                "on_part_begin": self._part_begin, "on_header_field": self._header_field,
                "on_header_value": self._header_value, "on_header_end": self._header_end,
                "on_part_data": self._part_data, "on_part_end": self._part_end,
                "on_end": self._end})
        except FormParserError as e:
            raise BadField("file", f"the multipart boundary is not usable ({e})") from None

    def write(self, chunk: bytes) -> None:
        try:
            self.parser.write(chunk)
        except FormParserError as e:
            raise BadField("file", f"the multipart body is malformed ({e})") from None

    def finish(self) -> dict[str, tuple[str | None, bytes]]:
        if not self.ended:
            raise BadField("file", "the multipart body is malformed (it ends before its closing "
                           "boundary)")
        return self.parts

    def _part_begin(self) -> None:
        self._name = self._filename = None
        self._data = bytearray()

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _header_end(self) -> None:
        if bytes(self._field).strip().lower() == b"content-disposition":
            _, params = parse_options_header(bytes(self._value))  # read as latin-1, bytes kept
            name, filename = params.get(b"name"), params.get(b"filename")
            self._name = None if name is None else name.decode("utf-8", "replace")
            self._filename = None if filename is None else filename.decode("utf-8", "replace")
        self._field, self._value = bytearray(), bytearray()

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        self._data += data[start:end]
        if len(self._data) > self.max_part:
            raise BadField("file" if self._name in (None, "file") else self._name,
                           f"the {'file' if self._filename is not None else 'field'} is larger "
                           f"than the limit of {self.max_part} bytes")

    def _part_end(self) -> None:
        if self._name is not None:
            self.parts[self._name] = (self._filename, bytes(self._data))

    def _end(self) -> None:
        self.ended = True


async def _form_parts(request: Request, max_file: int) -> dict[str, tuple[str | None, bytes]]:
    """A multipart/form-data body as {field name: (file name or None, bytes)}, parsed as it
    streams in: refused as soon as the body passes ``max_file`` plus the room for the form, or a
    part passes ``max_file``, so an oversized upload is never held whole."""
    kind, params = parse_options_header(request.headers.get("content-type", ""))
    boundary = params.get(b"boundary")
    if kind != b"multipart/form-data" or not boundary:
        raise BadField("file", "send the file as multipart/form-data with fields 'file' and "
                       "'purpose' (as OpenAI's files.create does)")
    limit = max_file + FORM_ROOM
    declared = request.headers.get("content-length")
    too_big = BadField("file", f"the upload is larger than the limit of {max_file} bytes")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_big
    form, seen = _Form(boundary, max_file), 0
    async for chunk in request.stream():
        seen += len(chunk)
        if seen > limit:
            raise too_big
        form.write(chunk)
    return form.finish()


def count_jsonl(data: bytes, max_lines: int) -> int:
    """The records of a JSON Lines file (one JSON object per non-blank line), or a 400 naming the
    first line that is not one."""
    if not data.strip():
        raise BadField("file", "the file is empty; give one JSON object per line")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BadField("file", f"not JSON Lines: not UTF-8 text (byte {e.start})") from None
    records = 0
    for n, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        records += 1
        if records > max_lines:
            raise BadField("file", f"the file has more than the limit of {max_lines} lines")
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise BadField("file", f"not JSON Lines: line {n} is not valid JSON ({e.msg})") from None
        if not isinstance(row, dict):
            raise BadField("file", f"not JSON Lines: line {n} is not a JSON object")
    return records


def files_dir() -> Path:
    return settings().home / "files"


UPLOAD = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["file", "purpose"], "properties": {
        "file": {"type": "string", "format": "binary", "description": "a JSON Lines file"},
        "purpose": {"type": "string", "enum": list(FILE_PURPOSES)}}}}}}}


@router.post("/files", summary="Upload a JSON Lines file for fine-tuning (OpenAI-compatible)",
             openapi_extra=UPLOAD)
async def upload_file(request: Request, state: StateDep, caller: WriterDep) -> FileObject:
    config = state.config
    parts = await _form_parts(request, config.max_file_bytes)
    purpose = parts.get("purpose", (None, b""))[1].decode("utf-8", "replace").strip()
    if purpose not in FILE_PURPOSES:
        raise BadField("purpose", f"{purpose!r} is not a purpose genloop takes: use "
                       f"{', '.join(FILE_PURPOSES)}")
    if "file" not in parts:
        raise BadField("file", "the form has no 'file' part")
    filename, data = parts["file"]
    lines = count_jsonl(data, config.max_file_lines)
    name = (filename or "upload.jsonl").replace("/", "_").replace("\\", "_")[:255]

    def store_it() -> FileObject:
        file_id = new_file_id()
        path = files_dir() / f"{file_id}.jsonl"
        files_dir().mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, data)
        try:
            record = state.store.add_file(file_id=file_id, purpose=purpose, filename=name,
                                          size=len(data), lines=lines, path=str(path),
                                          owner=caller.owner)
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        return file_object(record)

    return await run_in_threadpool(store_it)


@router.get("/files", summary="Uploaded files, newest first")
async def list_files(state: StateDep, caller: CallerDep,
                     purpose: str | None = Query(None, max_length=32),
                     limit: int = Query(10_000, ge=1, le=10_000)) -> FileList:
    rows = await run_in_threadpool(state.store.list_files, caller.visible_to, purpose, limit)
    return FileList(data=[file_object(f) for f in rows])


@router.get("/files/{file_id}", summary="One uploaded file")
async def retrieve_file(file_id: FileId, state: StateDep, caller: CallerDep) -> FileObject:
    return file_object(await run_in_threadpool(state.store.get_file, file_id, caller.visible_to))


@router.get("/files/{file_id}/content", summary="An uploaded file's bytes", response_class=Response,
            responses={200: {"content": {"application/jsonl": {"schema": {"type": "string"}}}}})
async def file_content(file_id: FileId, state: StateDep, caller: CallerDep) -> Response:
    f = await run_in_threadpool(state.store.get_file, file_id, caller.visible_to)
    try:
        data = await run_in_threadpool(Path(f.path).read_bytes)
    except OSError as e:
        raise InvalidInput(f"file {file_id}: its stored copy cannot be read ({e.strerror})") from None
    return Response(data, media_type="application/jsonl")


@router.delete("/files/{file_id}", summary="Delete an uploaded file (jobs keep their records)")
async def delete_file(file_id: FileId, state: StateDep, caller: WriterDep) -> FileDeleted:
    def delete() -> FileDeleted:
        f = state.store.delete_file(file_id, caller.visible_to)
        Path(f.path).unlink(missing_ok=True)
        return FileDeleted(id=f.id)

    return await run_in_threadpool(delete)
