"""The command's exit codes: one per kind of failure, so scripts can branch on them."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    # The instance did not get where the command waited for it to go (ERROR, or the wait
    # timed out).
    INSTANCE_FAILED = 3
    # Click's own code for a bad command line (unknown option, missing argument, bad value).
    USAGE = 2
    # The API refused the request: a 4xx other than 404 (bad token, bad input, a conflict).
    REFUSED = 4
    NOT_FOUND = 5
    # No answer from the API: connection refused, DNS, timeout.
    UNREACHABLE = 6
    # The API failed (5xx).
    SERVER_ERROR = 7
    # Ctrl-C.
    INTERRUPTED = 130
