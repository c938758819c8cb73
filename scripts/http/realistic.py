"""Schemathesis hooks for the stateful run: sign every request, and name a
group the test directory holds in generated triggers, so that chains of
trigger, status, close and audit reach real incidents. Used with positive
data only (a valid body stays valid with another valid group id)."""
import os
import sys

import schemathesis

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hooks  # noqa: E402,F401 (registers the signature)

GROUP = "ops-leadership"


@schemathesis.hook
def map_body(context, body):
    open("/tmp/gen/mapcalls","a").write(repr(getattr(context.operation,"path",None))+"\n")
    if context.operation is None or context.operation.path != "/v1/incidents":
        return body
    if not isinstance(body, dict):
        return body
    fields = body.get("trigger") if "trigger" in body else body.get("payload") if "payload" in body else body
    if isinstance(fields, dict) and isinstance(fields.get("stakeholderGroupId"), str):
        fields["stakeholderGroupId"] = GROUP
    return body
