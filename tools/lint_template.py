"""Lints a packaged template with cfn-lint twice: as written (SAM) and after the SAM transform.

cfn-lint 1.x checks SAM resources against SAM's own schemas without running the transform;
the second pass expands the template with aws-sam-translator, the library CloudFormation's
AWS::Serverless transform is built on, and lints the plain CloudFormation it produces.
Neither pass needs an AWS account or the network.

    python -m tools.lint_template dist/sam.json
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REGIONS = ["us-east-1"]
# aws-sam-translator needs a region; CodeUri must name S3 (`aws cloudformation package`
# uploads deployment.zip and writes the real location there).
_TRANSFORM_REGION = "us-east-1"
_CODE_URI = "s3://deployment-bucket/deployment.zip"


@dataclass(frozen=True)
class Finding:
    stage: str  # "sam" (as written) or "transformed"
    rule: str
    message: str
    line: int

    @property
    def is_error(self) -> bool:
        return self.rule.startswith("E")

    def __str__(self) -> str:
        return f"[{self.stage}] {self.rule} line {self.line}: {self.message}"


class _NoManagedPolicies:
    """The template names no AWS managed policy, so the transform needs none looked up."""

    def load(self) -> dict[str, str]:
        return {}


def sam_transform(template: dict[str, Any]) -> dict[str, Any]:
    """The plain CloudFormation the AWS::Serverless-2016-10-31 transform makes of `template`."""
    from samtranslator.translator.transform import transform

    expanded = copy.deepcopy(template)
    for resource in expanded.get("Resources", {}).values():
        if resource.get("Type") == "AWS::Serverless::Function":
            resource["Properties"]["CodeUri"] = _CODE_URI
    previous = os.environ.get("AWS_DEFAULT_REGION")
    os.environ["AWS_DEFAULT_REGION"] = previous or _TRANSFORM_REGION
    try:
        return transform(expanded, {}, _NoManagedPolicies())
    finally:
        if previous is None:
            os.environ.pop("AWS_DEFAULT_REGION", None)


def _lint(text: str, stage: str) -> list[Finding]:
    from cfnlint.api import ManualArgs, lint

    matches = lint(text, config=ManualArgs(regions=REGIONS))
    return [Finding(stage, m.rule.id, m.message, m.linenumber) for m in matches]


def lint_template(path: Path) -> list[Finding]:
    """cfn-lint's errors and warnings on the template as written and once transformed
    (line numbers of the second pass refer to the transformed template)."""
    text = path.read_text()
    findings = _lint(text, "sam")
    if any(f.is_error for f in findings):
        return findings
    transformed = sam_transform(json.loads(text))
    return findings + _lint(json.dumps(transformed, indent=1), "transformed")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("template", type=Path)
    args = parser.parse_args(argv)
    findings = lint_template(args.template)
    for finding in findings:
        print(finding)
    errors = sum(f.is_error for f in findings)
    print(f"cfn-lint: {errors} errors, {len(findings) - errors} warnings in {args.template}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
