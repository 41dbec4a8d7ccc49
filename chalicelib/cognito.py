"""The API's Cognito user-pool authorizer: API Gateway checks the token of a deployed stage."""

from __future__ import annotations

import copy
from typing import Any

from chalice.app import Authorizer, CognitoUserPoolAuthorizer

AUTHORIZER_NAME = "CognitoUserPool"
# The deployment template replaces this with its UserPoolArn parameter (see
# .chalice/merge-template.json); it never reaches a deployed API Gateway as is.
USER_POOL_ARN_PLACEHOLDER = (
    "arn:aws:cognito-idp:us-east-1:000000000000:userpool/us-east-1_SetAtPackageTime"
)


class CognitoAuthorizer(Authorizer):
    """Renders exactly as Chalice's CognitoUserPoolAuthorizer in the deployed API.

    Deliberately not a subclass of it: Chalice's local gateway (`chalice local`, `make run`,
    chalice.test.Client) decodes the bearer token of a CognitoUserPoolAuthorizer route as a
    JWT and crashes on the local stage's `dev:<user>` tokens, whereas it admits requests to
    routes with any other non-Lambda authorizer. The local stage then identifies the caller
    itself (chalicelib/api/identity.py), and deployed stages read the `sub` claim that
    API Gateway put in the request context after checking the token.
    """

    def __init__(
        self,
        name: str = AUTHORIZER_NAME,
        provider_arns: list[str] | None = None,
        header: str = "Authorization",
    ) -> None:
        self.name = name
        self.scopes: list[str] = []
        self._deployed = CognitoUserPoolAuthorizer(
            name, provider_arns or [USER_POOL_ARN_PLACEHOLDER], header=header
        )

    def to_swagger(self) -> dict[str, Any]:
        return self._deployed.to_swagger()

    def with_scopes(self, scopes: list[str]) -> Authorizer:
        scoped = copy.copy(self)
        scoped.scopes = list(scopes)
        return scoped
