"""``/v1/files`` and ``/v1/batches`` over HTTP: :func:`batch_app`, :class:`BatchHttpServer`.

The OpenAI Batch API shape:

- ``POST /v1/files`` (multipart: ``purpose=batch``, ``file``) → the file object;
- ``GET /v1/files/{id}``, ``GET /v1/files/{id}/content`` (input, output and error files);
- ``POST /v1/batches`` (``{"input_file_id", "endpoint", "completion_window"}``) → the
  batch object at once (status ``in_progress``: every line decided and queued);
- ``GET /v1/batches/{id}``, ``POST /v1/batches/{id}/cancel``.

The tenant is ``x-tiermesh-tenant`` and the submission's label ``x-tiermesh-sensitivity``,
both as the node's ext_authz set them: the service is meant to sit behind the node's Envoy
on a Unix socket of mode 0600 (:class:`BatchHttpServer`), which only the node's user can
reach. A request without a tenant is answered 401. Errors are ``{"error": {"message",
"type", "param"}}`` with the status of the :class:`~.errors.BatchError`.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any, Final

from aiohttp import web

from tiermesh.agents.batch.errors import BatchError, InvalidBatchInput
from tiermesh.agents.batch.service import BatchService
from tiermesh.agents.identity.errors import SocketPathError
from tiermesh.agents.identity.workload_api import bind_unix_socket_path, release_unix_socket_path
from tiermesh.controlplane.api import MATCH_HEADERS

__all__ = ["SOCKET_MODE", "BatchHttpServer", "batch_app"]

SOCKET_MODE: Final = 0o600
_SERVICE: Final = web.AppKey("service", BatchService)


def _error(status: int, code: str, message: str, param: str | None = None) -> web.Response:
    body = {"error": {"message": message, "type": code, "param": param}}
    return web.json_response(body, status=status)


@web.middleware
async def _errors(request: web.Request, handler: Any) -> web.StreamResponse:
    if not request.headers.get(MATCH_HEADERS["tenant"]):
        return _error(401, "unauthenticated", "no tenant: the request did not pass ext_authz")
    try:
        response: web.StreamResponse = await handler(request)
    except InvalidBatchInput as exc:
        return _error(exc.status, exc.code, str(exc), exc.where)
    except BatchError as exc:
        return _error(exc.status, exc.code, str(exc))
    return response


def _tenant(request: web.Request) -> str:
    return request.headers[MATCH_HEADERS["tenant"]]


async def _create_file(request: web.Request) -> web.Response:
    if not request.content_type.startswith("multipart/"):
        raise InvalidBatchInput("content-type", "upload the file as multipart/form-data")
    form = await request.post()
    upload = form.get("file")
    if not isinstance(upload, web.FileField):
        raise InvalidBatchInput("file", "missing (a multipart file field named 'file')")
    purpose = form.get("purpose")
    meta = await request.app[_SERVICE].create_file(
        _tenant(request),
        upload.file.read(),
        filename=upload.filename,
        purpose=purpose if isinstance(purpose, str) else "",
    )
    return web.json_response(_file_object(meta.to_json()))


def _file_object(meta: dict[str, Any]) -> dict[str, Any]:
    return {"object": "file", **{k: v for k, v in meta.items() if k != "tenant"}}


async def _file(request: web.Request) -> web.Response:
    meta = await request.app[_SERVICE].file(_tenant(request), request.match_info["file_id"])
    return web.json_response(_file_object(meta.to_json()))


async def _file_content(request: web.Request) -> web.Response:
    content = await request.app[_SERVICE].file_content(
        _tenant(request), request.match_info["file_id"]
    )
    return web.Response(body=content, content_type="application/jsonl")


async def _create_batch(request: web.Request) -> web.Response:
    try:
        body = json.loads(await request.read())
    except ValueError as exc:
        raise InvalidBatchInput("body", "not JSON") from exc
    if not isinstance(body, dict):
        raise InvalidBatchInput("body", "not a JSON object")
    for name in ("input_file_id", "endpoint"):
        if not isinstance(body.get(name), str):
            raise InvalidBatchInput(name, "missing or not a string")
    metadata = body.get("metadata")
    if metadata is not None and not (
        isinstance(metadata, dict) and all(isinstance(v, str) for v in metadata.values())
    ):
        raise InvalidBatchInput("metadata", "must be an object of strings")
    view = await request.app[_SERVICE].create_batch(
        _tenant(request),
        input_file_id=body["input_file_id"],
        endpoint=body["endpoint"],
        completion_window=str(body.get("completion_window", "24h")),
        declared=request.headers.get(MATCH_HEADERS["sensitivity"]),
        metadata=metadata,
    )
    return web.json_response(view.to_json())


async def _batch(request: web.Request) -> web.Response:
    view = await request.app[_SERVICE].batch(_tenant(request), request.match_info["batch_id"])
    return web.json_response(view.to_json())


async def _cancel(request: web.Request) -> web.Response:
    view = await request.app[_SERVICE].cancel(_tenant(request), request.match_info["batch_id"])
    return web.json_response(view.to_json())


def batch_app(service: BatchService, *, max_upload_bytes: int) -> web.Application:
    """The API (module docstring) on ``service``; uploads above ``max_upload_bytes`` get 413."""
    app = web.Application(middlewares=[_errors], client_max_size=max_upload_bytes)
    app[_SERVICE] = service
    app.router.add_post("/v1/files", _create_file)
    app.router.add_get("/v1/files/{file_id}", _file)
    app.router.add_get("/v1/files/{file_id}/content", _file_content)
    app.router.add_post("/v1/batches", _create_batch)
    app.router.add_get("/v1/batches/{batch_id}", _batch)
    app.router.add_post("/v1/batches/{batch_id}/cancel", _cancel)
    return app


class BatchHttpServer:
    """:func:`batch_app` on the Unix socket ``path`` (mode 0600, set before it listens).
    ``start``/``stop`` on the service's event loop; ``stop`` removes the socket."""

    def __init__(self, service: BatchService, path: Path, *, max_upload_bytes: int) -> None:
        self.path = path
        self._app = batch_app(service, max_upload_bytes=max_upload_bytes)
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        try:
            bind_unix_socket_path(self.path)
        except SocketPathError as exc:
            raise BatchError(str(exc)) from exc
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(str(self.path))
            os.chmod(self.path, SOCKET_MODE)
        except OSError:
            sock.close()
            release_unix_socket_path(self.path)
            raise
        self._runner = web.AppRunner(self._app, access_log=None)
        await self._runner.setup()
        await web.SockSite(self._runner, sock).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        release_unix_socket_path(self.path)
