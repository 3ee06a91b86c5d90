"""``/v1/files``: JSON Lines uploads for tuning (OpenAI's ``files.create``), listed, read, deleted.

An upload is ``multipart/form-data`` with a ``file`` part and a ``purpose`` field, as OpenAI's
clients send it. The body is counted as it streams in and refused past the limit (``ServeConfig.
max_file_bytes``, plus room for the form around the file), so an oversized upload is never held
whole nor written; the file must then be JSON Lines (one JSON object per line), not empty, and at
most ``max_file_lines`` lines. Only then is it written, atomically, and its row added. Every
refusal is a 400 naming the field (and the line), with nothing written.
"""

from __future__ import annotations

import json
import re
from email.message import Message
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import Response
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
_BOUNDARY = re.compile(r'boundary="?([^";]{1,200})"?')


async def _read_body(request: Request, limit: int) -> bytes:
    """The raw body, refused as soon as more than ``limit`` bytes have arrived."""
    declared = request.headers.get("content-length")
    too_big = BadField("file", f"the upload is larger than the limit of {limit - FORM_ROOM} bytes")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_big
    chunks, seen = [], 0
    async for chunk in request.stream():
        seen += len(chunk)
        if seen > limit:
            raise too_big
        chunks.append(chunk)
    return b"".join(chunks)


def _form_parts(content_type: str, body: bytes) -> dict[str, tuple[str | None, bytes]]:
    """A multipart/form-data body as {field name: (file name or None, bytes)}."""
    m = _BOUNDARY.search(content_type)
    if not content_type.lower().startswith("multipart/form-data") or m is None:
        raise BadField("file", "send the file as multipart/form-data with fields 'file' and "
                       "'purpose' (as OpenAI's files.create does)")
    delimiter = b"--" + m.group(1).encode("latin-1")
    parts: dict[str, tuple[str | None, bytes]] = {}
    for raw in body.split(delimiter)[1:]:
        if raw.startswith(b"--"):
            break  # the closing delimiter
        head, sep, content = raw.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        if not sep:
            raise BadField("file", "the multipart body is malformed (a part without headers)")
        disposition = Message()  # email's parser reads the header's quoted parameters
        for line in head.decode("utf-8", "replace").split("\r\n"):
            key, _, value = line.partition(":")
            if key.strip().lower() == "content-disposition":
                disposition["content-type"] = value.strip().replace("form-data", "x/form-data", 1)
        name, filename = disposition.get_param("name"), disposition.get_param("filename")
        if isinstance(name, str):
            parts[name] = (filename if isinstance(filename, str) else None,
                           content.removesuffix(b"\r\n"))
    return parts


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
    body = await _read_body(request, config.max_file_bytes + FORM_ROOM)
    parts = _form_parts(request.headers.get("content-type", ""), body)
    purpose = parts.get("purpose", (None, b""))[1].decode("utf-8", "replace").strip()
    if purpose not in FILE_PURPOSES:
        raise BadField("purpose", f"{purpose!r} is not a purpose genloop takes: use "
                       f"{', '.join(FILE_PURPOSES)}")
    if "file" not in parts:
        raise BadField("file", "the form has no 'file' part")
    filename, data = parts["file"]
    if len(data) > config.max_file_bytes:
        raise BadField("file", f"the file is {len(data)} bytes, larger than the limit of "
                       f"{config.max_file_bytes} bytes")
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
