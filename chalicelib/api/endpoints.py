"""What each route does with a request: parse, authenticate, call one use case, shape the answer."""

from __future__ import annotations

import csv
import io
import json
import re
from decimal import Decimal
from typing import Any, cast

import pydantic
from chalice.app import Request, Response

from chalicelib.api import responses
from chalicelib.api.contract import allowed_methods, openapi_document
from chalicelib.api.errors import validation_error
from chalicelib.api.identity import caller_from
from chalicelib.api.requests import (
    ActivityBody,
    AgentHeartbeatBody,
    AgentReadyBody,
    CostQuery,
    InstanceTypesQuery,
    LimitsBody,
    ListQueryParams,
    NoQuery,
    ProvisionBody,
    ProvisionByRequirement,
    UserLimitsBody,
    depth_exceeds,
)
from chalicelib.bootstrap import Container
from chalicelib.domain.agent import GpuFound, GpuReport, GpuSample, Heartbeat
from chalicelib.domain.catalog import InstanceType, Offer, Requirement, offer_order
from chalicelib.domain.costs import CostReport
from chalicelib.domain.errors import (
    AgentRefusedError,
    DomainError,
    InstanceNotFoundError,
    MethodNotAllowedError,
    PayloadTooLargeError,
    UnsupportedMediaTypeError,
    ValidationError,
)
from chalicelib.domain.identity import Caller
from chalicelib.domain.ids import USER_ID_PATTERN, is_instance_id, is_user_id
from chalicelib.domain.limits import LIMIT_NAMES, budget_spent_share
from chalicelib.services.agent import AgentInstructions
from chalicelib.services.instances import ProvisionRequest
from chalicelib.services.quotas import LimitsReport
from chalicelib.services.views import Gpu, InstanceRecord, instance_view, iso, record_as

MAX_BODY_BYTES = 64 * 1024
# No body of this API nests deeper (metadata: 4 levels inside the body's object).
MAX_BODY_DEPTH = 16


class Endpoints:
    def __init__(self, container: Container) -> None:
        self.container = container

    # -- routes ---------------------------------------------------------------------

    def provision(self, request: Request) -> Response:
        caller = self._caller(request)
        _parse(NoQuery, _query(request), "query string")
        key = idempotency_key(request.headers or {})
        data = _json_body(request)
        if not isinstance(data, dict):
            raise ValidationError("The request body must be a JSON object.")
        if key is None:
            answer = self._provision(caller, data)
            replayed = False
        else:
            # The same user, key and body within 24 hours: the first answer, nothing started.
            answer, replayed = self.container.idempotency.once(
                caller.user_id, key, data, lambda: self._provision(caller, data)
            )
        headers: dict[str, str | list[str]] = {"Location": f"/api/instances/{answer['id']}"}
        if replayed:
            # The record as it is now (it may have moved on), with the first answer's offer.
            current = self.container.instances.get(caller, answer["id"])
            answer = {**answer, **self._view(current)}
            headers["Idempotent-Replayed"] = "true"
        return Response(body=answer, status_code=202, headers=headers)

    def _provision(self, caller: Caller, data: dict[str, Any]) -> dict[str, Any]:
        if "instanceType" in data and "gpu" in data:
            raise ValidationError(
                "Give either instanceType (a named type) or gpu (a requirement), not both.",
                fields=[{"field": "gpu", "problem": "not allowed with instanceType"}],
            )
        body = _parse(ProvisionBody.branch_for(data), data, "request body")
        requirement = None
        instance_type = None
        if isinstance(body, ProvisionByRequirement):
            requirement = Requirement(
                gpu_model=body.gpu,
                gpu_count=body.gpuCount,
                provider=None if body.provider == "any" else body.provider,
            )
        else:
            instance_type = body.instanceType
        provisioned = self.container.instances.provision(
            caller,
            ProvisionRequest(
                instance_type=instance_type,
                requirement=requirement,
                provider=body.provider if body.provider != "any" else None,
                region=body.region,
                task_id=body.taskId,
                idle_timeout_minutes=body.autoTerminateMinutes,
                max_lifetime_minutes=body.maxLifetimeMinutes,
                metadata=body.metadata,
            ),
        )
        offer = provisioned.offer
        answer = record_as(
            responses.ProvisionedInstance, provisioned.instance, self.container.clock(),
            offer=None if offer is None else offer_view(offer),
            warnings=list(provisioned.warnings),
        )
        # A named type's answer has no `offer` at all (not a null one).
        return answer.model_dump(mode="json", exclude=None if offer else {"offer"})

    def get(self, request: Request, instance_id: str) -> dict[str, Any]:
        caller = self._caller(request)
        _parse(NoQuery, _query(request), "query string")
        return self._view(self.container.instances.get(caller, _checked_id(instance_id)))

    def list(self, request: Request) -> dict[str, Any]:
        caller = self._caller(request)
        params = _parse(ListQueryParams, _query(request), "query string")
        page = self.container.instances.list(
            caller,
            status=params.status,
            task_id=params.taskId,
            limit=params.limit,
            cursor=params.cursor,
            user_id=params.userId,
        )
        now = self.container.clock()
        return responses.InstancePage(
            items=[record_as(InstanceRecord, i, now) for i in page.items],
            nextCursor=page.next_cursor,
        ).model_dump(mode="json")

    def terminate(self, request: Request, instance_id: str) -> Response:
        caller = self._caller(request)
        _parse(NoQuery, _query(request), "query string")
        instance = self.container.instances.terminate(caller, _checked_id(instance_id))
        return Response(body=self._view(instance), status_code=202)

    def update_limits(self, request: Request, instance_id: str) -> dict[str, Any]:
        caller = self._caller(request)
        _parse(NoQuery, _query(request), "query string")
        body = _parse(LimitsBody, _json_body(request), "request body")
        instance = self.container.instances.update_limits(
            caller, _checked_id(instance_id), body.autoTerminateMinutes, body.maxLifetimeMinutes
        )
        return self._view(instance)

    def agent_ready(self, request: Request, instance_id: str) -> dict[str, Any]:
        secret = agent_secret(request.headers or {})
        _parse(NoQuery, _query(request), "query string")
        body = _parse(AgentReadyBody, _json_body(request), "request body")
        report = GpuReport(
            ok=body.ok,
            gpus=tuple(
                GpuFound(g.index, g.name, g.memoryTotalMib, g.driverVersion, g.eccErrors)
                for g in body.gpus
            ),
            reported_at=self.container.clock(),
            error=body.error,
        )
        instance_id = _checked_id(instance_id, refused=AgentRefusedError)
        return instructions_view(self.container.agent.report_ready(instance_id, secret, report))

    def agent_heartbeat(self, request: Request, instance_id: str) -> dict[str, Any]:
        secret = agent_secret(request.headers or {})
        _parse(NoQuery, _query(request), "query string")
        body = _parse(AgentHeartbeatBody, _json_body(request), "request body")
        heartbeat = Heartbeat(
            at=self.container.clock(),
            gpus=tuple(
                GpuSample(g.index, g.utilizationPercent, g.memoryUsedMib, g.processes)
                for g in body.gpus
            ),
            healthy=body.healthy,
            error=body.error,
        )
        instance_id = _checked_id(instance_id, refused=AgentRefusedError)
        return instructions_view(self.container.agent.heartbeat(instance_id, secret, heartbeat))

    def report_activity(self, request: Request, instance_id: str) -> dict[str, Any]:
        caller = self._caller(request)
        _parse(NoQuery, _query(request), "query string")
        body = _parse(ActivityBody, _json_body(request), "request body")
        instance = self.container.instances.report_activity(
            caller, _checked_id(instance_id), body.state
        )
        return self._view(instance)

    def stats(self, request: Request) -> dict[str, Any]:
        caller = self._caller(request)
        _parse(NoQuery, _query(request), "query string")
        stats = self.container.instances.stats(caller)
        return responses.FleetStats(
            byStatus=stats.by_status,
            byProvider=stats.by_provider,
            total=stats.total,
            live=stats.live,
            burnRateUsdPerHour=str(stats.burn_rate_per_hour),
            totalCostUsd=str(stats.total_cost),
            alwaysOnCostUsd=str(stats.always_on_cost),
            savingUsd=str(stats.saving),
            savingPercent=_money(stats.saving_percent),
            periodStart=iso(stats.period_start),
            computedAt=iso(self.container.clock()),
        ).model_dump(mode="json")

    def costs(self, request: Request) -> Any:
        caller = self._caller(request)
        params = _parse(CostQuery, _query(request), "query string")
        report = self.container.costs.report(
            caller, params.from_, params.to, params.groupBy, params.userId
        )
        if wants_csv(request.headers or {}):
            return Response(
                body=cost_report_csv(report), status_code=200,
                headers={"Content-Type": "text/csv; charset=utf-8"},
            )
        return cost_report_view(report)

    def user_limits(self, request: Request, user_id: str) -> dict[str, Any]:
        caller = self._caller(request)
        _parse(NoQuery, _query(request), "query string")
        return limits_view(self.container.quotas.report(caller, _checked_user(user_id)))

    def set_user_limits(self, request: Request, user_id: str) -> dict[str, Any]:
        caller = self._caller(request)
        _parse(NoQuery, _query(request), "query string")
        body = _parse(UserLimitsBody, _json_body(request), "request body")
        given = body.model_fields_set
        overrides: dict[str, Any] = {}
        for api_name, field_name in API_LIMIT_FIELDS.items():
            if api_name in given:
                value = getattr(body, api_name)
                is_money = field_name in ("max_burn_rate", "monthly_budget")
                overrides[field_name] = Decimal(value) if is_money and value else value
        report = self.container.quotas.set_limits(caller, _checked_user(user_id), overrides)
        return limits_view(report)

    def instance_types(self, request: Request) -> dict[str, Any]:
        self._caller(request)
        params = _parse(InstanceTypesQuery, _query(request), "query string")
        types = self.container.catalog.matching(
            params.provider, params.gpu, params.minGpus,
            include_retired=params.include == "retired",
        )
        return responses.InstanceTypeList(
            items=[instance_type_view(t) for t in types]
        ).model_dump(mode="json")

    def openapi(self, request: Request) -> dict[str, Any]:
        _parse(NoQuery, _query(request), "query string")
        return openapi_document()

    @staticmethod
    def method_not_allowed(request: Request, path: str) -> Response:
        allowed = allowed_methods(path)
        raise MethodNotAllowedError(
            f"{request.method} is not supported on {path}; use {', '.join(allowed)}.", allowed
        )

    # -- helpers --------------------------------------------------------------------

    def _caller(self, request: Request) -> Caller:
        return caller_from(
            request.headers or {},
            request.context,
            self.container.settings.accepts_dev_tokens,
        )

    def _view(self, instance: Any) -> dict[str, Any]:
        return instance_view(instance, self.container.clock())


def instance_type_view(instance_type: InstanceType) -> responses.InstanceType:
    source = instance_type.price_source
    return responses.InstanceType(
        provider=instance_type.provider,
        name=instance_type.name,
        gpu=Gpu(model=instance_type.gpu_model, count=instance_type.gpu_count),
        vcpus=instance_type.vcpus,
        memoryGib=instance_type.memory_gib,
        hourlyUsd=str(instance_type.hourly_usd),
        price=None if source is None else responses.PriceSource(
            url=source.url, region=source.region, asOf=source.as_of.isoformat(), note=source.note,
        ),
        billing=responses.BillingRule.model_validate(instance_type.billing_rule.to_json()),
        status=instance_type.status.value,
        statusSince=(
            instance_type.status_since.isoformat() if instance_type.status_since else None
        ),
        statusReason=instance_type.why or None,
        replacement=instance_type.replacement,
    )


def cost_report_view(report: CostReport) -> dict[str, Any]:
    return responses.CostReport(
        from_=iso(report.start),
        to=iso(report.end),
        groupBy=report.group_by,
        groups=[
            responses.CostGroup(
                key=g.key, costUsd=str(g.cost), billedSeconds=g.billed_seconds,
                instances=g.instances,
            )
            for g in report.groups
        ],
        totalUsd=str(report.total),
    ).model_dump(mode="json", by_alias=True)


CSV_COLUMNS = ("from", "to", "groupBy", "key", "costUsd", "billedSeconds", "instances")


def cost_report_csv(report: CostReport) -> str:
    """A row per group, then a `total` row (groupBy `total`, no key)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    start, end = iso(report.start), iso(report.end)
    for g in report.groups:
        writer.writerow(
            [start, end, report.group_by, g.key or "", g.cost, g.billed_seconds, g.instances]
        )
    writer.writerow([
        start, end, "total", "", report.total, sum(g.billed_seconds for g in report.groups),
        sum(g.instances for g in report.groups) if report.group_by != "day" else "",
    ])
    return out.getvalue()


def wants_csv(headers: Any) -> bool:
    """Whether the Accept header prefers text/csv to JSON (a plain `text/csv` does)."""
    accept = str(headers.get("accept") or headers.get("Accept") or "")
    best: tuple[float, str] = (0.0, "application/json")
    for part in accept.split(","):
        media, _, params = part.strip().partition(";")
        quality = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        media = media.strip().lower()
        if media in ("text/csv", "application/json", "*/*") and quality > best[0]:
            best = (quality, media)
    return best[1] == "text/csv"


API_LIMIT_FIELDS = {api: name for name, api in LIMIT_NAMES.items()}


def limits_view(report: LimitsReport) -> dict[str, Any]:
    limits, usage = report.limits, report.usage
    share = budget_spent_share(limits, report.month_to_date)
    return responses.UserLimits(
        userId=report.user_id,
        limits=responses.LimitValues(
            maxLiveInstances=limits.max_live_instances,
            maxLiveGpus=limits.max_live_gpus,
            maxBurnRateUsdPerHour=_money(limits.max_burn_rate),
            monthlyBudgetUsd=_money(limits.monthly_budget),
            # The domain keeps the action as text; the model checks it is one of the three.
            budgetAction=cast(responses.BudgetAction, limits.budget_action),
        ),
        defaulted=sorted(LIMIT_NAMES[name] for name in report.defaulted),
        usage=responses.LimitUsage(
            liveInstances=usage.live_instances,
            liveGpus=usage.live_gpus,
            burnRateUsdPerHour=str(usage.burn_rate),
            month=report.month,
            monthToDateUsd=str(report.month_to_date),
            budgetSpentPercent=(
                None if share is None else str((share * 100).quantize(Decimal("0.1")))
            ),
        ),
    ).model_dump(mode="json")


def _money(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


def _checked_user(user_id: str) -> str:
    if not is_user_id(user_id):
        raise ValidationError(
            f"{user_id!r} is not a user id.",
            fields=[{"field": "userId", "problem": "malformed", "allowed": USER_ID_PATTERN}],
        )
    return user_id


def offer_view(offer: Offer) -> responses.Offer:
    def candidate(
        instance_type: InstanceType, reason: str | None = None
    ) -> responses.OfferCandidate:
        return responses.OfferCandidate(
            instanceType=instance_type.name,
            provider=instance_type.provider,
            gpu=Gpu(model=instance_type.gpu_model, count=instance_type.gpu_count),
            hourlyUsd=str(instance_type.hourly_usd),
            available=reason is None,
            reason=reason,
        )

    # Provisioning answers only an offer that chose a type (it refuses the others).
    assert offer.chosen is not None
    weighed = [(t, None) for t in offer.candidates[1:]] + list(offer.excluded)
    weighed.sort(key=lambda pair: offer_order(pair[0]))
    return responses.Offer(
        chosen=candidate(offer.chosen),
        alternatives=[candidate(t, why) for t, why in weighed],
    )


IDEMPOTENCY_KEY_HEADER = "Idempotency-Key"
# 1-128 visible ASCII characters (a UUID is the usual choice).
_IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,128}$")


def idempotency_key(headers: Any) -> str | None:
    """The request's Idempotency-Key, or None; ValidationError if it is malformed."""
    value = headers.get(IDEMPOTENCY_KEY_HEADER.lower()) or headers.get(IDEMPOTENCY_KEY_HEADER)
    if value is None:
        return None
    if not _IDEMPOTENCY_KEY.match(value):
        raise ValidationError(
            "The Idempotency-Key header must be 1 to 128 visible ASCII characters, "
            "without spaces (a UUID is a good key).",
            fields=[{"field": IDEMPOTENCY_KEY_HEADER, "problem": "malformed"}],
        )
    return str(value)


def _checked_id(
    instance_id: str, refused: type[DomainError] = InstanceNotFoundError
) -> str:
    # An id that cannot exist answers like an unknown one: nothing to learn from the shape.
    if not is_instance_id(instance_id):
        if refused is AgentRefusedError:
            raise AgentRefusedError("This agent secret is not valid for this instance.")
        raise InstanceNotFoundError(f"No instance with id {instance_id!r}.")
    return instance_id


def agent_secret(headers: Any) -> str:
    """The secret of an agent call (`Authorization: Agent <secret>`): a user's bearer token
    opens no agent route."""
    header = headers.get("authorization") or headers.get("Authorization") or ""
    scheme, _, secret = header.strip().partition(" ")
    if scheme != "Agent" or not secret.strip():
        raise AgentRefusedError(
            "Agent routes take the instance's agent secret: send 'Authorization: Agent <secret>'."
        )
    return secret.strip()


def instructions_view(instructions: AgentInstructions) -> dict[str, Any]:
    return responses.AgentInstructions(
        status=instructions.status,
        heartbeatSeconds=instructions.heartbeat_seconds,
        deadmanSeconds=instructions.deadman_seconds,
        lifetimeDeadline=iso(instructions.lifetime_deadline),
        stop=instructions.stop,
    ).model_dump(mode="json")


def _query(request: Request) -> dict[str, Any]:
    params = request.query_params
    if params is None:
        return {}
    repeated = [name for name in params if len(params.getlist(name)) > 1]
    if repeated:
        raise ValidationError(
            f"Query parameters may appear once; repeated: {', '.join(sorted(repeated))}.",
            fields=[{"field": name, "problem": "repeated"} for name in sorted(repeated)],
        )
    return dict(params)


def _json_body(request: Request) -> Any:
    content_type = str(request.headers.get("content-type") or "") if request.headers else ""
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type != "application/json" and not media_type.endswith("+json"):
        raise UnsupportedMediaTypeError(
            f"The body must be JSON sent as Content-Type: application/json; "
            f"got {content_type or 'no Content-Type'}."
        )
    raw = request.raw_body
    if not raw:
        raise ValidationError("The request needs a JSON object body.")
    if len(raw) > MAX_BODY_BYTES:
        raise PayloadTooLargeError(
            f"The body is {len(raw)} bytes; at most {MAX_BODY_BYTES} are accepted."
        )
    try:
        data = json.loads(raw, parse_constant=_not_a_json_number)
    except _NotJsonNumberError as error:
        raise ValidationError(
            f"The body is not valid JSON: {error} is not a number JSON allows."
        ) from None
    except (ValueError, UnicodeDecodeError) as error:
        raise ValidationError(f"The body is not valid JSON: {error}.") from None
    except RecursionError:
        raise ValidationError("The body is nested too deeply to be read.") from None
    if depth_exceeds(data, MAX_BODY_DEPTH):
        raise ValidationError(
            f"The body nests objects and arrays more than {MAX_BODY_DEPTH} levels deep."
        )
    return data


class _NotJsonNumberError(Exception):
    """Python's json module reads NaN, Infinity and -Infinity; JSON has no such numbers."""


def _not_a_json_number(name: str) -> Any:
    raise _NotJsonNumberError(name)


def _parse(model: type[pydantic.BaseModel], data: Any, what: str) -> Any:
    if not isinstance(data, dict):
        raise ValidationError(f"The {what} must be a JSON object.")
    try:
        return model.model_validate(data)
    except pydantic.ValidationError as error:
        raise validation_error(error, model, what) from None
