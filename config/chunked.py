"""Request bodies sent with `Transfer-Encoding: chunked` (no Content-Length).

Django reads a body only up to CONTENT_LENGTH, so a chunked body was read as empty and a batch
of events was answered "The body is not valid JSON". This WSGI middleware, around the Django
application, reads such a body when the server has already decoded the chunks and marks the end
of the stream (`wsgi.input_terminated`: gunicorn does), up to DATA_UPLOAD_MAX_MEMORY_SIZE (a
413 past it), and gives Django a Content-Length. A server that cannot (e.g. `runserver`)
gets 411 Length Required naming the problem.
"""

import io
import json
from collections.abc import Callable, Iterable
from typing import Any

from django.conf import settings

READ_SIZE = 64 * 1024


def _json(start_response: Callable, status: str, body: dict[str, str]) -> Iterable[bytes]:
    data = json.dumps(body).encode()
    start_response(
        status,
        [("Content-Type", "application/json"), ("Content-Length", str(len(data)))],
    )
    return [data]


class ChunkedBodyMiddleware:
    def __init__(self, app: Callable) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Callable) -> Iterable[bytes]:
        chunked = "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()
        if chunked and not environ.get("CONTENT_LENGTH"):
            if not environ.get("wsgi.input_terminated"):
                return _json(
                    start_response,
                    "411 Length Required",
                    {
                        "detail": "This server cannot read a chunked request body: send the "
                        "body with a Content-Length header.",
                        "field": "body",
                    },
                )
            limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
            stream = environ["wsgi.input"]
            buffer = io.BytesIO()
            while True:
                chunk = stream.read(READ_SIZE)
                if not chunk:
                    break
                buffer.write(chunk)
                if limit is not None and buffer.tell() > limit:
                    return _json(
                        start_response,
                        "413 Request Entity Too Large",
                        {
                            "detail": f"The request body is over {limit:,} bytes, the limit. "
                            "Send smaller batches.",
                            "field": "body",
                        },
                    )
            environ["CONTENT_LENGTH"] = str(buffer.tell())
            buffer.seek(0)
            environ["wsgi.input"] = buffer
        return self.app(environ, start_response)
