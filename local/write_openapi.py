"""`make openapi`: write the OpenAPI document the API serves to docs/openapi.json."""

from __future__ import annotations

import json
from pathlib import Path

from chalicelib.api.contract import openapi_document

TARGET = Path(__file__).resolve().parent.parent / "docs" / "openapi.json"


def render() -> str:
    return json.dumps(openapi_document(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    TARGET.write_text(render())
    print(f"wrote {TARGET}")
