"""The formats of the service's ids, each written once: an instance's id (minted here) and a
user's id (the path, the filters and the local `dev:` tokens take it)."""

from __future__ import annotations

import re
import uuid

INSTANCE_ID_PREFIX = "inst-"
# The prefix and a UUID4's 32 lower-case hex digits (uuid.UUID.hex).
INSTANCE_ID_PATTERN = f"^{INSTANCE_ID_PREFIX}[0-9a-f]{{32}}$"
# A local name (alice, a.b@example.org) or a Cognito `sub` (a UUID); no colon, which the
# `dev:<user-id>:admin` token uses as its separator.
USER_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$"

# Checked with fullmatch: a plain match's `$` also matches before a final newline.
_INSTANCE_ID = re.compile(INSTANCE_ID_PATTERN)
_USER_ID = re.compile(USER_ID_PATTERN)


def new_instance_id() -> str:
    return INSTANCE_ID_PREFIX + uuid.uuid4().hex


def is_instance_id(text: str) -> bool:
    return _INSTANCE_ID.fullmatch(text) is not None


def is_user_id(text: str) -> bool:
    return _USER_ID.fullmatch(text) is not None
