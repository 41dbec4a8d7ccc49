"""Who sent a request: a local `dev:` token, or the Cognito authorizer's `sub` claim."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from chalicelib.domain.errors import AuthenticationError
from chalicelib.domain.identity import Caller
from chalicelib.domain.ids import is_user_id

# `dev:<user-id>` or `dev:<user-id>:admin`; a user id has no colon.
DEV_TOKEN = re.compile(r"dev:(?P<user>[^:]+)(?P<admin>:admin)?")
OPERATOR_GROUP = "provisioner-operators"


def caller_from(
    headers: Mapping[str, str], context: Mapping[str, Any] | None, accepts_dev_tokens: bool
) -> Caller:
    """The caller of a request; AuthenticationError if it carries no acceptable identity."""
    if accepts_dev_tokens:
        return _dev_caller(headers)
    claims = ((context or {}).get("authorizer") or {}).get("claims") or {}
    subject = claims.get("sub")
    if not subject:
        raise AuthenticationError("A valid Cognito bearer token is required.")
    groups = str(claims.get("cognito:groups", "")).replace(",", " ").split()
    return Caller(user_id=str(subject), is_admin=OPERATOR_GROUP in groups)


def _dev_caller(headers: Mapping[str, str]) -> Caller:
    header = headers.get("authorization") or headers.get("Authorization") or ""
    scheme, _, token = header.strip().partition(" ")
    if not header:
        raise AuthenticationError(
            "Missing Authorization header; send 'Authorization: Bearer dev:<user-id>'."
        )
    match = DEV_TOKEN.fullmatch(token.strip()) if scheme.lower() == "bearer" else None
    if match is None or not is_user_id(match["user"]):
        raise AuthenticationError(
            "Bad bearer token; the local stage accepts 'Bearer dev:<user-id>' "
            "or 'Bearer dev:<user-id>:admin'."
        )
    return Caller(user_id=match["user"], is_admin=bool(match["admin"]))
