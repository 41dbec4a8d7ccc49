"""Domain errors: what went wrong in the service's own terms; api/ maps them to HTTP."""

from __future__ import annotations


class DomainError(Exception):
    """Base of every error the service reports to a caller."""

    code = "domain_error"


class ValidationError(DomainError):
    """The caller sent something the service cannot accept."""

    code = "invalid_request"

    def __init__(self, message: str, fields: list[dict[str, str]] | None = None) -> None:
        super().__init__(message)
        self.fields = fields or []


class PayloadTooLargeError(DomainError):
    code = "payload_too_large"


class UnknownInstanceTypeError(ValidationError):
    code = "unknown_instance_type"


class UnsatisfiableRequestError(DomainError):
    """A well-formed request this deployment cannot satisfy (e.g. a region it does not serve)."""

    code = "unsatisfiable_request"

    def __init__(self, message: str, fields: list[dict[str, str]] | None = None) -> None:
        super().__init__(message)
        self.fields = fields or []


class NoMatchingInstanceTypeError(UnsatisfiableRequestError):
    """A well-formed requirement that no instance type in the catalog can satisfy."""

    code = "no_matching_instance_type"


class UnsupportedMediaTypeError(DomainError):
    code = "unsupported_media_type"


class MethodNotAllowedError(DomainError):
    code = "method_not_allowed"

    def __init__(self, message: str, allowed: list[str]) -> None:
        super().__init__(message)
        self.allowed = allowed


class InstanceNotFoundError(DomainError):
    """No such instance, or one the caller may not see (the two are not told apart)."""

    code = "instance_not_found"


class InvalidTransitionError(DomainError):
    """The lifecycle does not allow this change from the instance's current state."""

    code = "invalid_transition"


class ConcurrentUpdateError(DomainError):
    """Another writer changed the record between our read and our conditional write."""

    code = "concurrent_update"


class AuthenticationError(DomainError):
    code = "unauthorized"


class ProviderUnavailableError(DomainError):
    """The requested cloud provider is not configured in this deployment."""

    code = "provider_unavailable"


class ServiceNotConfiguredError(DomainError):
    """A setting this deployment needs for the request is missing."""

    code = "not_configured"


class StoreUnavailableError(DomainError):
    """The record store throttled or failed transiently; the same call may succeed later
    (the workflow retries this class, the API answers 503)."""

    code = "store_unavailable"


class IdempotencyKeyReusedError(DomainError):
    """An Idempotency-Key already used, within its window, for a request with another body."""

    code = "idempotency_key_reused"

    def __init__(self, message: str, key: str) -> None:
        super().__init__(message)
        self.fields = [{"field": "Idempotency-Key", "problem": "used for another body"}]
        self.key = key


class IdempotencyKeyInUseError(DomainError):
    """A request with the same Idempotency-Key is still being handled."""

    code = "idempotency_key_in_use"

    def __init__(self, message: str, key: str) -> None:
        super().__init__(message)
        self.fields = [{"field": "Idempotency-Key", "problem": "a request with it is running"}]
        self.key = key


class AgentRefusedError(AuthenticationError):
    """An agent call without the instance's own secret (or for an unknown instance)."""

    code = "agent_unauthorized"


class InstanceFinishedError(DomainError):
    """The instance is finished: its agent's calls are refused, and it should stop."""

    code = "instance_finished"
