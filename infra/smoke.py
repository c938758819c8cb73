#!/usr/bin/env python3
"""The first thing to run in a new AWS account: scripts/smoke-aws.

Deploys a stage, creates three people over SCIM (one reached by voice, one
by SMS, one by email) and a group of them, triggers a three-person P1,
checks from the audit trail that each was reached and that the voice call
was acknowledged (press 1), closes the incident and tears the stage down.

Usage (real account; credentials from the environment or a profile):

  smoke.py --call-to +1... --sms-to +1... --ses-identity example.com \
           --ses-from muster@example.com --sms-origination pool-... \
           --chime-from +1... [--email-to ADDRESS] [--region R] [--keep]

`--dry-run --endpoint URL` runs the same steps without an AWS account:
the translated template is created and deleted as a stack on moto's
CloudFormation at URL (moto creates what it supports and names what it
skips), and the HTTP steps run against `muster serve` (the same routers,
console carriers), where the "press 1" is the reply code the console SMS
prints, sent as the gateway's inbound SMS. Exit status 0 when every check
passed, 1 when one failed (each failure is named), 2 on bad arguments.

Phone numbers and addresses are never printed; people are named by id.
"""

import argparse
import json
import os
import re
import secrets
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")
# SES mailbox simulator: accepts the mail and publishes a Delivery event,
# sent from the sandbox too (SES developer guide, "Using the mailbox
# simulator").
SES_SIMULATOR = "success@simulator.amazonses.com"
SCIM_USER = "urn:ietf:params:scim:schemas:core:2.0:User"
SCIM_GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
MUSTER_USER = "urn:muster:scim:1.0:User"
# What the template keeps when its stack is deleted (DeletionPolicy: Retain).
RETAINED = {"AWS::DynamoDB::Table", "AWS::Cognito::UserPool", "AWS::Logs::LogGroup", "AWS::KMS::Key", "AWS::S3::Bucket"}
# Outputs a deployed stage must have for the steps below.
OUTPUTS = ["ApiUrl", "TokenUrl", "UserPoolId", "TriggerClientId", "AuditClientId", "StateTableName"]


class Failed(Exception):
    """A check that did not hold; the message names it."""


def step(msg):
    print(f"==> {msg}", flush=True)


def ok(msg):
    print(f"    ok: {msg}", flush=True)


def note(msg):
    print(f"    {msg}", flush=True)


def http(method, url, body=None, headers=None, form=False, timeout=30):
    """One request; returns (status, parsed JSON or text)."""
    data = None
    hdrs = dict(headers or {})
    if body is not None:
        if form:
            data = urllib.parse.urlencode(body).encode()
            hdrs.setdefault("content-type", "application/x-www-form-urlencoded")
        else:
            data = json.dumps(body).encode()
            hdrs.setdefault("content-type", "application/json")
    req = urllib.request.Request(url, data=data, headers=hdrs, method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            status, raw, ctype = r.status, r.read(), r.headers.get("content-type", "")
    except urllib.error.HTTPError as e:
        status, raw, ctype = e.code, e.read(), e.headers.get("content-type", "")
    text = raw.decode("utf-8", "replace")
    if "json" in ctype:
        try:
            return status, json.loads(text)
        except ValueError:
            pass
    return status, text


def expect(status, body, want, what):
    if status not in want:
        detail = body.get("detail") if isinstance(body, dict) else str(body)[:200]
        raise Failed(f"{what}: HTTP {status} (expected {'/'.join(map(str, want))}): {detail}")


# ---------------------------------------------------------------- stages


class RealStage:
    """A stack deployed with SAM into the account of the credentials."""

    def __init__(self, args):
        import boto3

        self.args = args
        self.session = boto3.session.Session(region_name=args.region)
        self.stack = args.stack or f"muster-smoke-{secrets.token_hex(3)}"
        self.stage = self.stack.replace("muster-", "")[:20]
        self.outputs = {}

    def deploy(self):
        a = self.args
        for z in ("trigger", "dispatch", "receipt", "tick"):
            path = os.path.join(ROOT, "target", "lambda", f"muster-{z}", "bootstrap.zip")
            if not os.path.exists(path):
                raise Failed(f"{path} is missing: run scripts/build-lambdas first")
        params = {
            "Stage": self.stage,
            "SesIdentity": a.ses_identity,
            "SesFromAddress": a.ses_from,
            "SmsOriginationIdentity": a.sms_origination,
            "EnableVoice": "true",
            "ChimeFromNumber": a.chime_from,
            "AlarmEmail": a.alarm_email or a.ses_from,
        }
        if a.policy_layer:
            params["PolicyLayerArn"] = a.policy_layer
        sam = os.path.join(ROOT, ".venv-infra", "sam", "bin", "sam")
        cmd = [
            sam, "deploy", "--template-file", os.path.join(ROOT, "infra", "template.yaml"),
            "--stack-name", self.stack, "--region", a.region, "--resolve-s3",
            "--capabilities", "CAPABILITY_IAM", "CAPABILITY_AUTO_EXPAND",
            "--no-confirm-changeset", "--no-fail-on-empty-changeset",
            "--parameter-overrides", *[f"{k}={v}" for k, v in params.items()],
        ]
        step(f"deploying stack {self.stack} (sam deploy; several minutes)")
        if subprocess.run(cmd).returncode != 0:
            raise Failed("sam deploy failed (its output above names the resource)")
        self.outputs = stack_outputs(self.session.client("cloudformation"), self.stack)
        ok(f"stack {self.stack} deployed")

    def api(self):
        return self.outputs["ApiUrl"]

    def resource(self, logical):
        cfn = self.session.client("cloudformation")
        r = cfn.describe_stack_resource(StackName=self.stack, LogicalResourceId=logical)
        return r["StackResourceDetail"]["PhysicalResourceId"]

    def scim_token(self):
        sm = self.session.client("secretsmanager")
        return sm.get_secret_value(SecretId=self.resource("ScimTokenSecret"))["SecretString"]

    def bearer(self, client_output, scope):
        """A client-credentials token from the stage's Cognito domain."""
        import base64

        cognito = self.session.client("cognito-idp")
        client_id = self.outputs[client_output]
        c = cognito.describe_user_pool_client(UserPoolId=self.outputs["UserPoolId"], ClientId=client_id)
        basic = base64.b64encode(f"{client_id}:{c['UserPoolClient']['ClientSecret']}".encode()).decode()
        status, body = http(
            "POST", self.outputs["TokenUrl"], {"grant_type": "client_credentials", "scope": scope},
            headers={"authorization": f"Basic {basic}"}, form=True,
        )
        expect(status, body, [200], f"token for {client_output}")
        return {"authorization": f"Bearer {body['access_token']}"}

    def trigger_headers(self):
        return self.bearer("TriggerClientId", "muster/incidents.write muster/incidents.read")

    def audit_headers(self):
        return self.bearer("AuditClientId", "muster/incidents.read muster/ComplianceOfficer")

    def prompt(self, people):
        note(f"answer the call to {people['voice']} and press 1 (waiting up to {self.args.wait} s)")

    def acknowledge(self, people, incident):
        pass  # the person pressed 1 on the call

    def teardown(self):
        if self.args.keep:
            note(f"--keep: stack {self.stack} left in place")
            return
        step(f"deleting stack {self.stack}")
        cfn = self.session.client("cloudformation")
        kept = [r for r in cfn.list_stack_resources(StackName=self.stack)["StackResourceSummaries"]
                if r["ResourceType"] in RETAINED]
        cfn.delete_stack(StackName=self.stack)
        cfn.get_waiter("stack_delete_complete").wait(StackName=self.stack)
        ok("stack deleted")
        for r in kept:
            note(f"retained by the template (docs/deploy.md, Teardown): {r['ResourceType']} {r['PhysicalResourceId']}")


class DryStage:
    """moto's CloudFormation for the stack, `muster serve` for the API."""

    def __init__(self, args):
        self.args = args
        self.cfn = boto3_client(args, "cloudformation")
        self.s3 = boto3_client(args, "s3")
        self.stage = f"smoke{secrets.token_hex(3)}"
        self.stack = f"muster-{self.stage}"
        self.outputs = {}
        self.created = False
        self.serve = None
        self.serve_log = None
        self.url = None
        self.token = secrets.token_hex(16)

    def deploy(self):
        step(f"creating stack {self.stack} from the translated template on moto ({self.args.endpoint})")
        sam_py = os.path.join(ROOT, ".venv-infra", "sam", "bin", "python")
        out = os.path.join(tempfile.mkdtemp(prefix="muster-smoke-"), "template.json")
        r = subprocess.run([sam_py, os.path.join(ROOT, "infra", "translate.py"),
                            os.path.join(ROOT, "infra", "template.yaml"), out])
        if r.returncode != 0:
            raise Failed("the template does not translate (infra/translate.py above)")
        with open(out) as f:
            template = json.load(f)
        # The code the stack names, uploaded as sam deploy would (moto does
        # not run functions, so a zip that is not built yet is an empty file).
        self.s3.create_bucket(Bucket="muster-check-artifacts")
        for logical, res in template["Resources"].items():
            if res["Type"] == "AWS::Lambda::Function":
                key = res["Properties"]["Code"]["S3Key"]
                name = logical.replace("Function", "").lower()
                path = os.path.join(ROOT, "target", "lambda", f"muster-{name}", "bootstrap.zip")
                body = open(path, "rb").read() if os.path.exists(path) else b""
                self.s3.put_object(Bucket="muster-check-artifacts", Key=key, Body=body)
        params = {
            "Stage": self.stage, "SesIdentity": "example.com", "SesFromAddress": "muster@example.com",
            "SmsOriginationIdentity": "pool-0123456789abcdef",
            # moto has no Chime SDK: the voice resources stay out of its stack.
            "EnableVoice": "false", "ApiBaseUrl": "https://muster.example.com",
            "AlarmEmail": "ops@example.com",
            "PolicyLayerArn": "arn:aws:lambda:us-east-1:123456789012:layer:muster-policy:1",
        }
        self.cfn.create_stack(
            StackName=self.stack, TemplateBody=json.dumps(template),
            Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in params.items()],
            Capabilities=["CAPABILITY_IAM", "CAPABILITY_AUTO_EXPAND"],
        )
        self.created = True
        self.cfn.get_waiter("stack_create_complete").wait(StackName=self.stack, WaiterConfig={"Delay": 1, "MaxAttempts": 120})
        # moto makes no Cognito outputs: the API stand-in needs no token.
        self.outputs = stack_outputs(self.cfn, self.stack, ["StateTableName", "AuditTableName", "DirectoryTableName"])
        made = {r["LogicalResourceId"] for r in self.cfn.list_stack_resources(StackName=self.stack)["StackResourceSummaries"]}
        wanted = set(template["Resources"])
        ok(f"stack {self.stack}: CREATE_COMPLETE, {len(made)} of {len(wanted)} resources created by moto")
        skipped = sorted({template["Resources"][r]["Type"] for r in wanted - made})
        if skipped:
            note("moto's CloudFormation does not create: " + ", ".join(skipped))
        dynamodb = boto3_client(self.args, "dynamodb")
        for table in ("StateTableName", "AuditTableName", "DirectoryTableName"):
            name = self.outputs[table]
            status = dynamodb.describe_table(TableName=name)["Table"]["TableStatus"]
            if status != "ACTIVE":
                raise Failed(f"table {table} is {status}")
        ok("the stack's outputs name its three tables, each ACTIVE")
        self._start_serve()

    def _start_serve(self):
        muster = os.path.join(ROOT, "target", "debug", "muster")
        if not os.path.exists(muster):
            raise Failed(f"{muster} is missing: cargo build -p muster-cli")
        directory = os.path.join(tempfile.mkdtemp(prefix="muster-smoke-"), "directory.yaml")
        with open(directory, "w") as f:
            f.write("stakeholders: []\ngroups: []\n")
        self.serve_log = tempfile.NamedTemporaryFile(prefix="muster-smoke-serve-", suffix=".log", delete=False)
        env = dict(os.environ, MUSTER_SCIM_TOKEN=self.token, MUSTER_LOG="warn")
        self.serve = subprocess.Popen(
            ["timeout", "300", muster, "serve", "--port", "0", "--directory", directory],
            stdout=self.serve_log, stderr=subprocess.STDOUT, env=env,
        )
        for _ in range(300):
            m = re.search(r"listening on (http://127\.0\.0\.1:\d+)", self.console())
            if m:
                self.url = m.group(1)
                ok(f"API stand-in: muster serve at {self.url}")
                return
            if self.serve.poll() is not None:
                raise Failed("muster serve exited at start:\n" + self.console())
            time.sleep(0.1)
        raise Failed("muster serve did not start within 30 s")

    def console(self):
        with open(self.serve_log.name, encoding="utf-8", errors="replace") as f:
            return f.read()

    def api(self):
        return self.url

    def scim_token(self):
        return self.token

    def trigger_headers(self):
        return {}

    def audit_headers(self):
        return {"x-muster-roles": "ComplianceOfficer"}

    def prompt(self, people):
        pass

    def acknowledge(self, people, incident):
        # The console SMS prints the reply code; the person's reply arrives
        # as the gateway's inbound SMS.
        for _ in range(100):
            m = re.search(rf"--> sms to {re.escape(people['sms'])} .*\n.*\n.*Reply ACK (\d+)", self.console())
            if m:
                break
            time.sleep(0.1)
        else:
            raise Failed("no SMS with a reply code reached the console within 10 s")
        status, body = http("POST", f"{self.url}/v1/webhooks/console",
                            {"from": self.args.sms_to, "text": f"ACK {m.group(1)}"})
        expect(status, body, [200, 202], "inbound SMS reply")
        ok(f"{people['sms']} replied to the SMS with its code")

    def teardown(self):
        if self.serve is not None:
            self.serve.terminate()
            self.serve.wait(10)
        if self.serve_log is not None:
            os.unlink(self.serve_log.name)
        if self.created:
            step(f"deleting stack {self.stack} on moto")
            self.cfn.delete_stack(StackName=self.stack)
            self.cfn.get_waiter("stack_delete_complete").wait(StackName=self.stack, WaiterConfig={"Delay": 1, "MaxAttempts": 120})
            ok("stack deleted")


def boto3_client(args, service):
    """A client of moto at --endpoint (dry run)."""
    import boto3

    return boto3.client(
        service, endpoint_url=args.endpoint, region_name=args.region,
        aws_access_key_id="smoke-dry-run", aws_secret_access_key="smoke-dry-run",
    )


def stack_outputs(cfn, stack, required=OUTPUTS):
    out = {o["OutputKey"]: o["OutputValue"] for o in cfn.describe_stacks(StackName=stack)["Stacks"][0].get("Outputs", [])}
    missing = [k for k in required if k not in out]
    if missing:
        raise Failed(f"stack {stack} lacks outputs {', '.join(missing)}")
    return out


# ---------------------------------------------------------------- steps


def create_people(stage, args):
    """Three SCIM users, each accepting one channel, and a group of them."""
    step("creating three people and a group over SCIM")
    api, tok = stage.api(), stage.scim_token()
    hdrs = {"authorization": f"Bearer {tok}", "content-type": "application/scim+json"}
    people = {}
    for channel, contact in (("voice", args.call_to), ("sms", args.sms_to), ("email", args.email_to)):
        user = {
            "schemas": [SCIM_USER, MUSTER_USER],
            "userName": f"smoke-{channel}-{secrets.token_hex(4)}@smoke.invalid",
            "displayName": f"Smoke test ({channel})",
            "active": True,
            MUSTER_USER: {"tier": "1", "channels": [channel]},
        }
        if channel == "email":
            user["emails"] = [{"value": contact, "primary": True}]
        else:
            user["phoneNumbers"] = [{"value": contact, "type": "mobile"}]
        status, body = http("POST", f"{api}/scim/v2/Users", user, headers=hdrs)
        expect(status, body, [201], f"SCIM create of the {channel} user")
        people[channel] = body["id"]
        ok(f"SCIM user {body['id']} ({channel})")
    group = {
        "schemas": [SCIM_GROUP],
        "displayName": f"smoke-{secrets.token_hex(3)}",
        "members": [{"value": i} for i in people.values()],
    }
    status, body = http("POST", f"{api}/scim/v2/Groups", group, headers=hdrs)
    expect(status, body, [201], "SCIM create of the group")
    ok(f"SCIM group {body['id']} with 3 members")
    return people, body["id"]


def trigger(stage, group):
    step("triggering a three-person P1")
    incident = f"SMOKE-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{secrets.token_hex(2)}"
    body = {"trigger": {
        "incidentId": incident, "severity": "P1", "stakeholderGroupId": group,
        "messageTemplate": "Muster smoke test. Acknowledge by pressing 1.",
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }}
    status, answer = http("POST", f"{stage.api()}/v1/incidents", body, headers=stage.trigger_headers())
    expect(status, answer, [202], "trigger")
    if answer.get("cascades") != 3:
        raise Failed(f"trigger started {answer.get('cascades')} cascades, expected 3")
    ok(f"incident {incident}: 3 cascades")
    return incident


def audit(stage, incident):
    status, body = http("GET", f"{stage.api()}/v1/incidents/{incident}/audit", headers=stage.audit_headers())
    expect(status, body, [200], "audit")
    return body["entries"]


def wait_audit(stage, incident, args, deadline, what, done):
    """Polls the audit every 2 s until `done(entries)` lists nothing
    missing; fails naming what is missing (and any failed attempts)."""
    while True:
        entries = audit(stage, incident)
        missing = done(entries)
        if not missing:
            return entries
        if time.monotonic() > deadline:
            failed = sorted(f"{e.get('kind')} on {e.get('channel')} for {e.get('stakeholder')}"
                            for e in entries if e.get("kind") in ("FAILED", "UNREACHABLE", "SEND_REJECTED"))
            raise Failed("after %d s the audit lacks %s: %s%s" % (
                args.wait, what, "; ".join(missing), ("; it has " + "; ".join(failed)) if failed else ""))
        time.sleep(2)


def check(stage, incident, people, args):
    """Each person reached on their channel (a delivery receipt, or their
    acknowledgement on it), then the acknowledgement, from the audit."""
    step("checking receipts and the acknowledgement in the audit trail")
    deadline = time.monotonic() + args.wait
    stage.prompt(people)

    def reached(entries):
        seen = {(e.get("stakeholder"), e.get("channel")) for e in entries
                if e.get("kind") in ("DELIVERED", "ACKNOWLEDGED")}
        return [f"{c} receipt for {people[c]}" for c in ("voice", "sms", "email") if (people[c], c) not in seen]

    wait_audit(stage, incident, args, deadline, "receipts", reached)
    for c in ("voice", "sms", "email"):
        ok(f"{c} reached {people[c]} (receipt in the audit)")
    acker = people["sms"] if args.dry_run else people["voice"]
    stage.acknowledge(people, incident)

    def acked(entries):
        return [] if any(e.get("stakeholder") == acker and e.get("kind") == "ACKNOWLEDGED" for e in entries) \
            else [f"ACKNOWLEDGED by {acker}"]

    wait_audit(stage, incident, args, deadline, "the acknowledgement", acked)
    ok(f"{acker} acknowledged")


def close(stage, incident):
    step("closing the incident")
    status, body = http("POST", f"{stage.api()}/v1/incidents/{incident}/close", {}, headers=stage.trigger_headers())
    expect(status, body, [202], "close")
    # The close answers at once; its jobs cancel, then the status says closed.
    deadline = time.time() + 120
    while True:
        status, body = http("GET", f"{stage.api()}/v1/incidents/{incident}", headers=stage.trigger_headers())
        expect(status, body, [200], "status after close")
        if body["incident"]["status"] == "closed":
            break
        if time.time() > deadline:
            raise Failed(f"still {body['incident']['status']} 120 s after the close: {body['counts']}")
        time.sleep(2)
    if body["counts"].get("active", 0) != 0:
        raise Failed(f"{body['counts']['active']} cascades still active after close")
    ok(f"incident closed: {body['counts']}")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dry-run", action="store_true", help="moto for the stack, muster serve for the API")
    p.add_argument("--endpoint", help="moto's URL (--dry-run)")
    p.add_argument("--region", default=os.environ.get("AWS_REGION", "us-east-1"))
    p.add_argument("--stack", help="stack name (default muster-smoke-<random>)")
    p.add_argument("--call-to", help="a verified number that will be called (E.164)")
    p.add_argument("--sms-to", help="a sandbox-verified number for one SMS (E.164)")
    p.add_argument("--email-to", default=SES_SIMULATOR, help=f"email recipient (default {SES_SIMULATOR})")
    p.add_argument("--ses-identity"), p.add_argument("--ses-from")
    p.add_argument("--sms-origination", help="origination number, pool or sender id (id or ARN)")
    p.add_argument("--chime-from", help="the SIP media application's phone number (E.164)")
    p.add_argument("--policy-layer", help="policy layer ARN (default: the built-in policy)")
    p.add_argument("--alarm-email")
    p.add_argument("--wait", type=int, default=180, help="seconds to wait for receipts and the acknowledgement")
    p.add_argument("--keep", action="store_true", help="leave the stack deployed")
    args = p.parse_args()
    if args.dry_run:
        args.call_to = args.call_to or "+12125550101"
        args.sms_to = args.sms_to or "+12125550102"
        args.wait = min(args.wait, 30)
        if not args.endpoint:
            p.error("--dry-run needs --endpoint (moto's URL)")
    else:
        need = ["call_to", "sms_to", "ses_identity", "ses_from", "sms_origination", "chime_from"]
        missing = ["--" + n.replace("_", "-") for n in need if not getattr(args, n)]
        if missing:
            p.error("missing " + ", ".join(missing))
    for name in ("call_to", "sms_to", "chime_from"):
        v = getattr(args, name)
        if v and not E164.match(v):
            p.error(f"--{name.replace('_', '-')}: not an E.164 number (+ and 7 to 15 digits)")

    stage = DryStage(args) if args.dry_run else RealStage(args)
    try:
        stage.deploy()
        people, group = create_people(stage, args)
        incident = trigger(stage, group)
        check(stage, incident, people, args)
        close(stage, incident)
        result = 0
    except Failed as e:
        print(f"FAILED: {e}", file=sys.stderr, flush=True)
        result = 1
    finally:
        try:
            stage.teardown()
        except Exception as e:  # teardown must report, not hide the result
            print(f"FAILED: teardown: {e}", file=sys.stderr, flush=True)
            result = 1
    print("smoke: all checks passed" if result == 0 else "smoke: failed", flush=True)
    return result


if __name__ == "__main__":
    sys.exit(main())
