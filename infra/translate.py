#!/usr/bin/env python3
"""Translate the SAM template to plain CloudFormation, offline.

Usage: translate.py TEMPLATE OUTPUT

The SAM translator (aws-sam-translator) normally asks IAM for the managed
policy map and boto3 for the region; here both are fixed (a fake account in
us-east-1, and the few AWS managed policies a template may name by short
name), so the translation needs no credentials and no network. The output
is what CloudFormation would deploy after the transform, for cfn-lint and
checkov. Resource Metadata (checkov skips and their reasons) is passed
through to the generated resources.
"""

import json
import sys

import boto3
from samtranslator.model.exceptions import InvalidDocumentException
from samtranslator.parser.parser import Parser
from samtranslator.translator.translator import Translator
from samtranslator.utils.py27hash_fix import to_py27_compatible_template, undo_mark_unicode_str_in_template
from samtranslator.yaml_helper import yaml_parse

REGION = "us-east-1"
ACCOUNT = "123456789012"

# Managed policies a SAM `Policies:` list may name by short name. Muster's
# functions have their own roles, so none are needed today; kept so that a
# short name fails with "not in the offline map" rather than a network call.
MANAGED_POLICIES = {
    "AWSLambdaBasicExecutionRole": "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole",
    "AWSXRayDaemonWriteAccess": "arn:aws:iam::aws:policy/AWSXRayDaemonWriteAccess",
    "AWSXrayWriteOnlyAccess": "arn:aws:iam::aws:policy/AWSXrayWriteOnlyAccess",
}


def transform(template: dict, parameters: dict) -> dict:
    """samtranslator.translator.transform.transform, with a boto3 session
    that has a region (no credentials, no calls) and the fixed policy map."""
    to_py27_compatible_template(template, parameters)
    session = boto3.session.Session(region_name=REGION)
    translator = Translator(None, Parser(), boto_session=session)
    translated = translator.translate(
        template,
        parameter_values=parameters,
        passthrough_metadata=True,
        get_managed_policy_map=lambda: dict(MANAGED_POLICIES),
    )
    return undo_mark_unicode_str_in_template(translated)


def as_packaged(template: dict) -> None:
    """What `sam package` does before the transform: a local CodeUri
    becomes the S3 location it is uploaded to (a fake bucket here)."""
    for name, resource in template.get("Resources", {}).items():
        if resource.get("Type") != "AWS::Serverless::Function":
            continue
        props = resource.get("Properties", {})
        uri = props.get("CodeUri")
        if isinstance(uri, str) and not uri.startswith("s3://"):
            props["CodeUri"] = f"s3://muster-check-artifacts/{name}.zip"


def main() -> int:
    if len(sys.argv) != 3:
        print("usage: translate.py TEMPLATE OUTPUT", file=sys.stderr)
        return 2
    source, output = sys.argv[1], sys.argv[2]
    with open(source, encoding="utf-8") as f:
        template = yaml_parse(f.read())
    as_packaged(template)
    parameters = {
        "AWS::Region": REGION,
        "AWS::AccountId": ACCOUNT,
        "AWS::Partition": "aws",
        "AWS::StackName": "muster-check",
        "AWS::StackId": f"arn:aws:cloudformation:{REGION}:{ACCOUNT}:stack/muster-check/00000000-0000-0000-0000-000000000000",
        "AWS::URLSuffix": "amazonaws.com",
        "AWS::NotificationARNs": [],
        "AWS::NoValue": None,
    }
    try:
        translated = transform(template, parameters)
    except InvalidDocumentException as e:
        for cause in e.causes:
            print(f"error: {cause.message}", file=sys.stderr)
        return 1
    with open(output, "w", encoding="utf-8") as f:
        json.dump(translated, f, indent=1, sort_keys=False)
        f.write("\n")
    count = len(translated.get("Resources", {}))
    print(f"translated {source} -> {output} ({count} resources)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
