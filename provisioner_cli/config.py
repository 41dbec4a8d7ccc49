"""Where the API is and who the caller is: options, then environment, then local defaults."""

from __future__ import annotations

import base64
import getpass
import json
import re
from collections.abc import Mapping
from urllib.parse import urlparse

# `make run` serves the API here.
DEFAULT_API = "http://127.0.0.1:8000"
API_ENV = "PROVISIONER_API"
TOKEN_ENV = "PROVISIONER_TOKEN"
LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
_DEV_TOKEN = re.compile(r"^dev:(?P<user>[^:]+)(?P<admin>:admin)?$")


def is_local(api: str) -> bool:
    return urlparse(api).hostname in LOCAL_HOSTS


def default_token(api: str, environ: Mapping[str, str]) -> str | None:
    """On a local URL (the local stage, which reads dev tokens), `dev:$USER`."""
    if not is_local(api):
        return None
    user = environ.get("USER") or environ.get("USERNAME") or _login_name()
    return f"dev:{user}" if user else None


def _login_name() -> str | None:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return None


def user_of(token: str | None) -> str | None:
    """The user id a token names, when the client can read it: a `dev:` token's user, or a
    JWT's `sub` claim (read, not verified: the API checks the token itself)."""
    if not token:
        return None
    match = _DEV_TOKEN.match(token)
    if match:
        return match["user"]
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        payload = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except ValueError:
        return None
    subject = payload.get("sub") if isinstance(payload, dict) else None
    return subject if isinstance(subject, str) else None
