"""Who is calling: a `dev:` token on the local stage, the Cognito `sub` claim elsewhere."""

from __future__ import annotations

import pytest

from chalicelib.api.identity import caller_from
from chalicelib.domain.errors import AuthenticationError
from chalicelib.domain.identity import Caller


def cognito(sub: str | None = "user-123", groups: str | None = None) -> dict:
    claims = {} if sub is None else {"sub": sub}
    if groups is not None:
        claims["cognito:groups"] = groups
    return {"authorizer": {"claims": claims}}


# -- local dev tokens -------------------------------------------------------------------


def test_a_dev_token_identifies_an_ordinary_user():
    caller = caller_from({"Authorization": "Bearer dev:alice"}, None, accepts_dev_tokens=True)
    assert caller == Caller(user_id="alice", is_admin=False)


def test_a_dev_token_ending_in_admin_identifies_an_operator():
    caller = caller_from({"Authorization": "Bearer dev:bob:admin"}, None, accepts_dev_tokens=True)
    assert caller == Caller(user_id="bob", is_admin=True)


@pytest.mark.parametrize(
    ("headers", "user"),
    [
        ({"authorization": "Bearer dev:alice"}, "alice"),
        ({"Authorization": "bearer dev:alice"}, "alice"),
        ({"Authorization": "  Bearer dev:alice  "}, "alice"),
        ({"Authorization": "Bearer dev:alice.smith@example-corp"}, "alice.smith@example-corp"),
    ],
)
def test_dev_tokens_tolerate_header_case_scheme_case_and_padding(headers, user):
    assert caller_from(headers, None, accepts_dev_tokens=True) == Caller(user, is_admin=False)


def test_a_user_id_of_128_characters_is_accepted():
    token = "Bearer dev:" + "a" * 128
    assert caller_from({"Authorization": token}, None, True).user_id == "a" * 128


def test_a_missing_authorization_header_is_refused_with_a_hint():
    with pytest.raises(AuthenticationError, match="Missing Authorization header"):
        caller_from({}, None, accepts_dev_tokens=True)


@pytest.mark.parametrize(
    "header",
    [
        "Basic dev:alice",
        "Bearer alice",
        "Bearer dev:",
        "Bearer",
        "   ",
        "Bearer dev:alice:root",
        "Bearer dev:-alice",
        "Bearer dev:al ice",
        "Bearer dev:" + "a" * 129,
    ],
)
def test_a_malformed_dev_token_is_refused(header):
    with pytest.raises(AuthenticationError, match="Bad bearer token"):
        caller_from({"Authorization": header}, None, accepts_dev_tokens=True)


def test_dev_tokens_are_refused_when_the_stage_does_not_accept_them():
    with pytest.raises(AuthenticationError, match="Cognito"):
        caller_from({"Authorization": "Bearer dev:alice:admin"}, None, accepts_dev_tokens=False)


def test_the_local_stage_ignores_cognito_claims():
    with pytest.raises(AuthenticationError, match="Missing Authorization header"):
        caller_from({}, cognito("user-123", "provisioner-operators"), accepts_dev_tokens=True)


# -- Cognito claims ---------------------------------------------------------------------


def test_a_cognito_subject_identifies_an_ordinary_user():
    assert caller_from({}, cognito("user-123"), False) == Caller("user-123", is_admin=False)


def test_a_member_of_provisioner_operators_is_an_operator():
    caller = caller_from({}, cognito("user-123", "provisioner-operators"), False)
    assert caller == Caller("user-123", is_admin=True)


@pytest.mark.parametrize(
    "groups", ["provisioner-operators,billing", "billing, provisioner-operators"]
)
def test_operators_are_recognised_among_several_groups(groups):
    assert caller_from({}, cognito("user-123", groups), False).is_admin is True


@pytest.mark.parametrize("groups", ["billing", "provisioner-operators-readonly", ""])
def test_other_groups_do_not_make_an_operator(groups):
    assert caller_from({}, cognito("user-123", groups), False).is_admin is False


@pytest.mark.parametrize(
    "context",
    [None, {}, {"authorizer": None}, {"authorizer": {}}, cognito(sub=None), cognito(sub="")],
)
def test_a_request_without_a_cognito_subject_is_refused(context):
    with pytest.raises(AuthenticationError, match="A valid Cognito bearer token is required"):
        caller_from({"Authorization": "Bearer dev:alice"}, context, accepts_dev_tokens=False)


def test_an_authentication_failure_is_reported_as_unauthorized():
    with pytest.raises(AuthenticationError) as refused:
        caller_from({}, None, accepts_dev_tokens=False)
    assert refused.value.code == "unauthorized"


def test_a_deployment_that_forgets_its_stage_does_not_trust_dev_tokens():
    from chalicelib.settings import Settings

    assert Settings.from_env({}).accepts_dev_tokens is False
    assert Settings.from_env({"STAGE": "local"}).accepts_dev_tokens is True
