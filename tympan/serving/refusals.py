"""How the server refuses a request: the guard in front of KServe (403, 413 from the body's length),
the 413 for audio that decodes to too much, and one log line per refusal.

KServe logs every exception it turns into an answer with its full traceback, 4xx included, so any
client could fill the log with tracebacks of its own bad requests. A refusal is the client's error,
not the server's: it gets one warning line (status and reason, without client-sent line breaks);
server errors (5xx) keep their tracebacks.
"""

from __future__ import annotations

import json
import logging

from fastapi.exception_handlers import request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from kserve.errors import InvalidInput, ModelNotFound

from tympan.serving.inputs import TooLarge

log = logging.getLogger("tympan.serving")

# KServe's own exceptions that it answers with a 4xx, and their status.
CLIENT_ERRORS = {TooLarge: 413, ModelNotFound: 404, InvalidInput: 400}
MAX_REASON = 300  # characters of a reason in the log: a client chooses what goes in there


def refused(status: int, reason: str) -> None:
    """The one log line of a refused request."""
    text = " ".join(str(reason).split())  # no line breaks or tabs from the client
    if len(text) > MAX_REASON:
        text = text[:MAX_REASON] + "..."
    log.warning("refused with %d: %s", status, text)


def client_status(exc: BaseException) -> int | None:
    return next((status for kind, status in CLIENT_ERRORS.items() if isinstance(exc, kind)), None)


class OneLineRefusals(logging.Filter):
    """On KServe's logger: a record of an exception answered with a 4xx becomes one line, without
    the traceback (KServe logs each as 'Exception:' with exc_info)."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        status = client_status(exc) if exc is not None else None
        if status is None:
            return True
        refused(status, str(exc))
        return False


async def too_large(_request, exc: TooLarge) -> JSONResponse:
    refused(413, str(exc))
    return JSONResponse(status_code=413, content={"error": str(exc)})


async def invalid_schema(request, exc: RequestValidationError):
    """FastAPI's 422 for a body that does not fit the V2 schema, logged like every refusal."""
    refused(422, "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()))
    return await request_validation_exception_handler(request, exc)


def quiet_refusals(app) -> None:
    """Answer TooLarge with a 413, and log every refusal as one line (see the module's docstring)."""
    app.add_exception_handler(TooLarge, too_large)
    app.add_exception_handler(RequestValidationError, invalid_schema)
    kserve_log = logging.getLogger("kserve")
    if not any(isinstance(f, OneLineRefusals) for f in kserve_log.filters):
        kserve_log.addFilter(OneLineRefusals())


# KServe's model-repository API: load and unload any model, open to every client.
REPOSITORY_ROUTES = "/v2/repository"


class Guard:
    """ASGI middleware that answers two kinds of request itself: KServe's model-repository routes
    (403: any client could unload the model) and bodies over `max_body` bytes (413, decided from
    Content-Length before the body is read, or while reading a body sent without one)."""

    def __init__(self, app, max_body: int):
        self.app = app
        self.max_body = max_body

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if scope["path"].startswith(REPOSITORY_ROUTES):
            return await answer(send, 403, "the model repository API (load, unload) is disabled on this server")
        length = dict(scope["headers"]).get(b"content-length")
        if length is None:
            receive = await self.read_limited(receive)
        elif not length.isdigit() or int(length) > self.max_body:
            receive = None
        if receive is None:
            return await answer(send, 413, f"the request body is over this server's limit of {self.max_body} bytes")
        await self.app(scope, receive, send)

    async def read_limited(self, receive):
        """A `receive` that replays a body sent without Content-Length, or None once it is too long."""
        messages, size = [], 0
        while True:
            message = await receive()
            messages.append(message)
            size += len(message.get("body", b""))
            if size > self.max_body:
                return None
            if message["type"] != "http.request" or not message.get("more_body", False):
                break

        async def replay():
            return messages.pop(0) if messages else await receive()

        return replay


async def answer(send, status: int, error: str) -> None:
    refused(status, error)
    body = json.dumps({"error": error}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
