"""The error names the workflows' Retry and Catch match are the code's exception classes.

Step Functions matches a Lambda error by the exception's class name alone, exactly: a Retry
naming a class that no longer exists, or misspelt, never fires, and a subclass raised instead
of the listed class escapes it. Nothing fails when that happens, so this test does."""

from __future__ import annotations

import importlib
import json
import pkgutil
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import chalicelib
from chalicelib.services import steps
from chalicelib.workflow.stepfunctions import WORKFLOWS

CHALICELIB = Path(chalicelib.__file__).parent
# Errors the Lambda service itself reports for a failed invocation (AWS's error handling
# guide for Step Functions); they name no class of ours.
LAMBDA_SERVICE_ERRORS = {
    "Lambda.AWSLambdaException",
    "Lambda.ClientExecutionTimeoutException",
    "Lambda.SdkClientException",
    "Lambda.ServiceException",
    "Lambda.TooManyRequestsException",
    "Lambda.Unknown",
}


def _states(definition: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for name, state in definition["States"].items():
        yield name, state
        for branch in state.get("Branches", []):  # Parallel
            yield from _states(branch)
        for key in ("Iterator", "ItemProcessor"):  # Map
            if key in state:
                yield from _states(state[key])


def _matched_names() -> list[tuple[str, str, str]]:
    """(workflow, state, error name) for each name of each Retry and Catch."""
    found = []
    for workflow in WORKFLOWS:
        definition = json.loads(workflow.definition_file.read_text())
        for state_name, state in _states(definition):
            for rule in state.get("Retry", []) + state.get("Catch", []):
                for error in rule["ErrorEquals"]:
                    found.append((workflow.name, state_name, error))
    return found


def _exception_classes() -> dict[str, list[type[BaseException]]]:
    """Every exception class defined in chalicelib, by name."""
    classes: dict[str, list[type[BaseException]]] = {}
    for module_info in pkgutil.walk_packages([str(CHALICELIB)], "chalicelib."):
        module = importlib.import_module(module_info.name)
        for value in vars(module).values():
            if (
                isinstance(value, type)
                and issubclass(value, BaseException)
                and value.__module__ == module.__name__
            ):
                classes.setdefault(value.__name__, []).append(value)
    return classes


def _subclasses(cls: type[BaseException]) -> Iterator[type[BaseException]]:
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)


def _source_uses(name: str) -> list[str]:
    """Lines of chalicelib that raise the class or map something to it (not its definition,
    imports or except clauses)."""
    word = re.compile(rf"\b{re.escape(name)}\b")
    uses = []
    for path in CHALICELIB.rglob("*.py"):
        for line in path.read_text().splitlines():
            stripped = line.strip()
            if not word.search(stripped) or stripped.startswith(
                ("class ", "from ", "import ", "except", "#", '"')
            ):
                continue
            uses.append(f"{path.relative_to(CHALICELIB)}: {stripped}")
    return uses


CLASSES = _exception_classes()
OWN_NAMES = sorted(
    {
        error
        for _, _, error in _matched_names()
        if not error.startswith("States.") and error not in LAMBDA_SERVICE_ERRORS
    }
)


def test_the_workflows_match_errors_of_ours_besides_those_of_step_functions_and_lambda() -> None:
    names = {error for _, _, error in _matched_names()}
    assert "States.ALL" in names  # every Task's Catch sends the record to ERROR
    assert {"CloudThrottlingError", "ConcurrentUpdateError", "StoreUnavailableError"} <= names
    unknown_lambda = {n for n in names if n.startswith("Lambda.")} - LAMBDA_SERVICE_ERRORS
    assert not unknown_lambda, f"not errors of the Lambda service: {sorted(unknown_lambda)}"


@pytest.mark.parametrize("name", OWN_NAMES)
def test_each_error_name_is_one_exception_class_of_the_code(name: str) -> None:
    classes = CLASSES.get(name, [])
    assert len(classes) == 1, f"{name}: defined as {classes} in chalicelib (want exactly one)"


@pytest.mark.parametrize("name", OWN_NAMES)
def test_each_error_name_is_raised_or_translated_to(name: str) -> None:
    uses = [
        use for use in _source_uses(name)
        if re.search(rf"raise {name}\b|{name}\(|[:=,(\[]\s*{name}\b", use.split(": ", 1)[1])
    ]
    assert uses, f"{name} is matched by a Retry or Catch but chalicelib never raises it"


@pytest.mark.parametrize("name", OWN_NAMES)
def test_no_subclass_escapes_the_retry_that_names_its_base(name: str) -> None:
    # Step Functions compares names, not classes: a subclass must be listed next to its base.
    (cls,) = CLASSES[name]
    listed_with = {
        (workflow, state) for workflow, state, error in _matched_names() if error == name
    }
    for sub in _subclasses(cls):
        for workflow, state in listed_with:
            assert (workflow, state, sub.__name__) in _matched_names(), (
                f"{sub.__name__} (a {name}) is not matched in {workflow}.{state}"
            )


def test_each_launch_failure_reason_is_keyed_by_an_exception_class_of_the_code() -> None:
    # A key that names no class would silently give the default reason (internal_error).
    for name in steps._REASONS:
        if not name.startswith("States."):
            assert len(CLASSES.get(name, [])) == 1, name
