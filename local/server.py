"""The local API server: Chalice's own, with the two HTTP methods API Gateway itself refuses
(TRACE, CONNECT) answered as the deployed API's other refused methods are: a 405 problem
document with `Allow`, not the Python HTTP server's 501 HTML page."""

from __future__ import annotations

import json
import logging
import re
from typing import Any
from urllib.parse import urlsplit

from chalice import Chalice
from chalice.config import Config
from chalice.local import (
    ChaliceRequestHandler,
    CustomLocalChalice,
    LocalChalice,
    LocalDevServer,
    ThreadedHTTPServer,
)

from chalicelib.api.contract import OPERATIONS, allowed_methods
from chalicelib.api.errors import problem, response_for
from chalicelib.domain.errors import MethodNotAllowedError

# Connections a listening socket holds while its threads take the ones before (a burst of
# POSTs); the socket module's default of 5 resets the rest. The kernel caps it at somaxconn.
LISTEN_BACKLOG = 1024
ACCESS_LOG = "access"  # the logger of the access log (make run shows it at DEBUG)

_PATHS = [
    (re.compile("^" + re.sub(r"\{[^/]+\}", "[^/]+", path) + "$"), path)
    for path in sorted({op.path for op in OPERATIONS})
]


def refusal(method: str, raw_path: str) -> tuple[int, dict[str, str], bytes]:
    """The problem document for `method` on `raw_path` (a path the API does not have: 404)."""
    path = urlsplit(raw_path).path
    contract_path = next((p for pattern, p in _PATHS if pattern.match(path)), None)
    if contract_path is None:
        response = problem(404, "not_found", f"The API has no resource at {path}.")
    else:
        allowed = allowed_methods(contract_path)
        response = response_for(MethodNotAllowedError(
            f"{method} is not supported on {contract_path}; use {', '.join(allowed)}.", allowed
        ))
    body = json.dumps(response.body).encode()
    return response.status_code, {str(k): str(v) for k, v in response.headers.items()}, body


class BurstServer(ThreadedHTTPServer):
    """Chalice's local server (a thread per connection) with a backlog for a burst."""

    request_queue_size = LISTEN_BACKLOG


class RequestHandler(ChaliceRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base's name)
        """The access log goes to its logger, not straight to stderr."""
        logging.getLogger(ACCESS_LOG).debug("%s %s", self.address_string(), format % args)

    def _refuse(self) -> None:
        status, headers, body = refusal(self.command, self.path)
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    do_TRACE = do_CONNECT = _refuse


def local_server(app: Chalice, config: Config, host: str, port: int) -> LocalDevServer:
    """chalice.local.create_local_server, with the handler and the backlog above."""
    if not isinstance(app, LocalChalice):  # a second server of one process: done already
        CustomLocalChalice.__bases__ = (LocalChalice, app.__class__)
        app.__class__ = CustomLocalChalice
    return LocalDevServer(
        app, config, host, port, handler_cls=RequestHandler, server_cls=BurstServer
    )
