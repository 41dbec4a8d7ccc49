"""A WSGI face for the Chalice app, so schemathesis can call it in-process: each request
goes through chalice.test's local API Gateway exactly as the other API tests' requests do."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from http import HTTPStatus
from typing import Any

from chalice.test import Client


class ChaliceWsgi:
    def __init__(self, client: Client) -> None:
        self.client = client

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/")
        query = environ.get("QUERY_STRING", "")
        if query:
            path = f"{path}?{query}"
        headers = {
            key[5:].replace("_", "-").title(): value
            for key, value in environ.items() if key.startswith("HTTP_")
        }
        if environ.get("CONTENT_TYPE"):
            headers["Content-Type"] = environ["CONTENT_TYPE"]
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        response = self.client.http.request(
            environ["REQUEST_METHOD"], path, headers=headers, body=body
        )
        status = response.status_code
        start_response(f"{status} {HTTPStatus(status).phrase}", list(response.headers.items()))
        return [response.body or b""]
