"""The service's HTTP API as Python calls: one method per operation, errors as ApiError."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from provisioner_cli.exit_codes import ExitCode

# Connect errors are retried by the transport (nothing reached the API); a read may have.
CONNECT_RETRIES = 2
TIMEOUT = httpx.Timeout(30.0, connect=5.0)
PAGE_SIZE = 100


class ApiError(Exception):
    """A request that did not succeed, with the exit code it maps to."""

    def __init__(self, message: str, exit_code: ExitCode, status: int | None = None,
                 problem: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code
        self.status = status
        self.problem = dict(problem or {})

    @classmethod
    def from_response(cls, response: httpx.Response) -> ApiError:
        problem = _json_or_none(response)
        if not isinstance(problem, dict):
            problem = {}
        # A problem document's `detail`; API Gateway's own answers carry only `message`.
        detail = problem.get("detail") or problem.get("message") or response.reason_phrase
        status = response.status_code
        if status == 404:
            code = ExitCode.NOT_FOUND
        elif status >= 500:
            code = ExitCode.SERVER_ERROR
        else:
            code = ExitCode.REFUSED
        return cls(f"{status} {response.reason_phrase}: {detail}", code, status, problem)


@dataclass(frozen=True)
class Launched:
    instance: dict[str, Any]
    # The API answered a retry with the same Idempotency-Key: nothing new was launched.
    replayed: bool
    idempotency_key: str


class ApiClient:
    """Calls the API at `base_url` (the URL the /api paths hang off) with a bearer token."""

    def __init__(self, base_url: str, token: str | None,
                 transport: httpx.BaseTransport | None = None) -> None:
        headers = {"Accept": "application/json", "User-Agent": "provisioner-cli"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        # The URL the /api paths hang off; a URL given with its /api is taken as meant.
        self.base_url = base_url.rstrip("/").removesuffix("/api")
        self._http = httpx.Client(
            base_url=self.base_url,
            headers=headers,
            timeout=TIMEOUT,
            transport=transport or httpx.HTTPTransport(retries=CONNECT_RETRIES),
        )

    def close(self) -> None:
        self._http.close()

    # -- instances ------------------------------------------------------------------

    def launch(self, body: Mapping[str, Any], idempotency_key: str | None = None) -> Launched:
        key = idempotency_key or str(uuid.uuid4())
        # With the key, resending after a lost answer is safe: the API replays the first one.
        response = self._send(
            "POST", "/api/instances", json=dict(body),
            headers={"Idempotency-Key": key}, attempts=2,
        )
        replayed = response.headers.get("Idempotent-Replayed", "").lower() == "true"
        return Launched(response.json(), replayed, key)

    def get(self, instance_id: str) -> dict[str, Any]:
        return self._json("GET", f"/api/instances/{instance_id}")

    def list_instances(self, status: str | None = None, task_id: str | None = None,
             user_id: str | None = None, limit: int | None = None) -> list[dict[str, Any]]:
        """Every matching instance, newest first (following the pages), at most `limit`."""
        found: list[dict[str, Any]] = []
        for item in self._pages(status, task_id, user_id):
            found.append(item)
            if limit is not None and len(found) >= limit:
                break
        return found

    def _pages(self, status: str | None, task_id: str | None,
               user_id: str | None) -> Iterator[dict[str, Any]]:
        params = {k: v for k, v in (("status", status), ("taskId", task_id),
                                    ("userId", user_id)) if v is not None}
        cursor: str | None = None
        while True:
            page = self._json("GET", "/api/instances", params={
                **params, "limit": str(PAGE_SIZE), **({"cursor": cursor} if cursor else {}),
            })
            yield from page["items"]
            cursor = page.get("nextCursor")
            if not cursor:
                return

    def stop(self, instance_id: str) -> dict[str, Any]:
        return self._json("DELETE", f"/api/instances/{instance_id}")

    def report_activity(self, instance_id: str, state: str) -> dict[str, Any]:
        return self._json(
            "POST", f"/api/instances/{instance_id}/activity", json={"state": state}, attempts=1
        )

    def update_limits(self, instance_id: str, limits: Mapping[str, int]) -> dict[str, Any]:
        return self._json("PATCH", f"/api/instances/{instance_id}", json=dict(limits))

    def stats(self) -> dict[str, Any]:
        return self._json("GET", "/api/instances/stats")

    # -- catalog and money ----------------------------------------------------------

    def instance_types(self, gpu: str | None = None, provider: str | None = None,
                       min_gpus: int | None = None) -> list[dict[str, Any]]:
        params = {k: str(v) for k, v in (("gpu", gpu), ("provider", provider),
                                         ("minGpus", min_gpus)) if v is not None}
        items: list[dict[str, Any]] = self._json(
            "GET", "/api/instance-types", params=params)["items"]
        return items

    def costs(self, start: str | None, end: str | None, group_by: str,
              user_id: str | None = None) -> dict[str, Any]:
        params = {k: v for k, v in (("from", start), ("to", end), ("groupBy", group_by),
                                    ("userId", user_id)) if v is not None}
        return self._json("GET", "/api/costs", params=params)

    # -- transport ------------------------------------------------------------------

    def _json(self, method: str, path: str, attempts: int | None = None,
              **kwargs: Any) -> dict[str, Any]:
        if attempts is None:
            # Reads and DELETE may be sent again when the answer is lost; a bare POST may not.
            attempts = 2 if method in ("GET", "DELETE", "PATCH") else 1
        answer = self._send(method, path, attempts=attempts, **kwargs).json()
        if not isinstance(answer, dict):
            raise ApiError(f"The API answered {method} {path} with no JSON object.",
                           ExitCode.SERVER_ERROR)
        return answer

    def _send(self, method: str, path: str, attempts: int = 1, **kwargs: Any) -> httpx.Response:
        for attempt in range(1, attempts + 1):
            try:
                response = self._http.request(method, path, **kwargs)
            except httpx.ConnectError as error:
                raise self._unreachable(error) from None
            except httpx.TransportError as error:  # read timeout, connection dropped
                if attempt < attempts:
                    continue
                raise self._unreachable(error) from None
            if response.is_success:
                return response
            raise ApiError.from_response(response)
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    def _unreachable(self, error: httpx.TransportError) -> ApiError:
        reason = str(error) or type(error).__name__
        return ApiError(
            f"Cannot reach the API at {self.base_url} ({reason}). Is it running? "
            "Set --api or PROVISIONER_API.",
            ExitCode.UNREACHABLE,
        )


def _json_or_none(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None
