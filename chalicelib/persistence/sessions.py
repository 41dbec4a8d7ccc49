"""Builds a PynamoDB model's DynamoDB client on a botocore session of the caller's, so that
PynamoDB and boto3 load the SDK's JSON models and endpoint data once, not once each."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from botocore.session import Session
    from pynamodb.models import Model


def build_client_on(model: type[Model], session: Session) -> None:
    """Build `model`'s client now, on `session` (call it where client builds are serialised:
    the composition root's lock).

    PynamoDB has no documented way to pass a session (pynamodb/PynamoDB#204 and #877 ask
    for one). Its `Connection.session` property returns the private, thread-local
    `_local.session`, made by `botocore.session.get_session()` when unset, and its `client`
    property builds the client from it once and keeps it on the connection for every
    thread. So: set this thread's session, then build the client at once, in this thread.
    (PynamoDB builds a client again only when the one it holds has no credentials; that one
    comes from a session of its own, as before.) tests/functional/test_cold_start.py checks
    that the client is built on the session passed."""
    connection = model._get_connection().connection
    connection._local.session = session
    _ = connection.client
