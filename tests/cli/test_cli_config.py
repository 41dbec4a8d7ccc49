"""Where the command line finds the API and who it says the caller is (no IO)."""

from __future__ import annotations

import base64
import json

from provisioner_cli.config import default_token, user_of
from provisioner_cli.render import billed_seconds, duration


def jwt(claims: dict) -> str:
    def part(value: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")

    return f"{part({'alg': 'RS256'})}.{part(claims)}.signature"


def test_a_local_url_gets_the_users_dev_token_and_a_deployed_one_none():
    assert default_token("http://127.0.0.1:8000", {"USER": "alice"}) == "dev:alice"
    assert default_token("http://localhost:8123", {"USER": "bob"}) == "dev:bob"
    assert default_token("https://abc.execute-api.us-east-1.amazonaws.com/v1",
                         {"USER": "alice"}) is None


def test_the_caller_is_read_from_a_dev_token_or_a_cognito_tokens_subject():
    assert user_of("dev:alice") == "alice"
    assert user_of("dev:ops:admin") == "ops"
    assert user_of(jwt({"sub": "5f1c-77", "cognito:groups": ["x"]})) == "5f1c-77"
    assert user_of("not-a-token") is None
    assert user_of(None) is None


def test_durations_read_short_and_billing_counts_whole_increments_past_the_minimum():
    assert [duration(s) for s in (0, 59, 61, 3600 + 300, 2 * 86400 + 3 * 3600)] == [
        "0s", "59s", "1m01s", "1h05m", "2d03h"]
    ec2 = {"incrementSeconds": 1, "minimumSeconds": 60}
    assert billed_seconds(12.4, ec2) == 60
    assert billed_seconds(61.2, ec2) == 62
    assert billed_seconds(61.2, {"incrementSeconds": 60, "minimumSeconds": 0}) == 120
