#!/usr/bin/env python3
"""Checks infra/template.yaml against the workspace and the deployment
contract (run by scripts/infra-check, in the venv that has the SAM
translator).

Usage: check_template.py SAM_TEMPLATE TRANSLATED_JSON [WORKSPACE_DIR]

1. The template's functions are exactly the binaries the workspace builds
   under functions/ (`cargo metadata --no-deps`): same names, CodeUri
   ../target/lambda/<binary>/bootstrap.zip, FunctionName muster-<stage>-<x>.
2. Every MUSTER_* variable a function gets is in the contract table below,
   for that function; every required one is set; every MUSTER_* name the
   function code mentions is in the contract.
3. Only the trigger function's role may read the audit table (a read limited
   by dynamodb:LeadingKeys to seal items, which tick needs, reads no entry);
   no role has
   DynamoDB, KMS, SQS or S3 actions on every resource.
4. Every checkov skip in the template carries a written reason.
5. The contract table below is the configuration's own list
   (`VARIABLES` in aws/src/runtime/config.rs): the same variables, each
   required by the same functions.

Prints every difference and exits 1 if there is any.
"""

import json
import os
import re
import subprocess
import sys

from samtranslator.yaml_helper import yaml_parse

FUNCTIONS = ("trigger", "dispatch", "receipt", "tick")
ALL = frozenset(FUNCTIONS)

# The deployment contract: variable -> (functions that read it, required).
CONTRACT = {
    "MUSTER_STAGE": (ALL, True),
    "MUSTER_STATE_TABLE": (ALL, True),
    "MUSTER_AUDIT_TABLE": (ALL, True),
    "MUSTER_DIRECTORY_TABLE": (ALL, True),
    "MUSTER_DISPATCH_QUEUE_URL": (ALL, True),
    "MUSTER_PRIORITY_QUEUE_URL": (ALL, True),
    "MUSTER_TIMER_QUEUE_URL": (ALL, True),
    "MUSTER_TIMER_QUEUE_ARN": (ALL, True),
    "MUSTER_SCHEDULER_GROUP": (ALL, True),
    "MUSTER_SCHEDULER_ROLE_ARN": (ALL, True),
    "MUSTER_PII_KEY_ID": (ALL, True),
    "MUSTER_SEAL_KEY_ID": ({"trigger", "tick"}, True),
    "MUSTER_API_BASE_URL": ({"dispatch"}, True),
    "MUSTER_ACK_SECRET": ({"trigger", "dispatch", "receipt", "tick"}, True),
    "MUSTER_WEBHOOK_SECRET": ({"receipt"}, True),
    "MUSTER_SCIM_TOKEN": ({"trigger"}, False),
    "MUSTER_SES_FROM": ({"dispatch"}, True),
    "MUSTER_SES_CONFIGURATION_SET": ({"dispatch"}, True),
    "MUSTER_SMS_ORIGINATION": ({"dispatch"}, False),
    "MUSTER_SMS_CONFIGURATION_SET": ({"dispatch"}, False),
    "MUSTER_CHIME_SMA_ID": ({"dispatch"}, False),
    "MUSTER_CHIME_FROM_NUMBER": ({"dispatch"}, False),
    "MUSTER_PUSH_ENABLED": ({"dispatch"}, False),
    "MUSTER_SNS_TOPIC_ARNS": ({"receipt"}, True),
    "MUSTER_CONTACT_LOOKUP_URL": ({"dispatch"}, False),
    "MUSTER_CONTACT_LOOKUP_TOKEN": ({"dispatch"}, False),
    "MUSTER_AUDIT_ARCHIVE_BUCKET": ({"tick"}, True),
    "MUSTER_AUDIT_RETENTION_DAYS": (ALL, False),
    "MUSTER_POLICY": (ALL, False),
    "MUSTER_POLICY_FILE": (ALL, False),
    "MUSTER_BOARD_SIGN_IN_URL": ({"trigger"}, False),
    "MUSTER_BOARD_CLIENT_ID": ({"trigger"}, False),
    "MUSTER_BOARD_URL": ({"trigger"}, False),
    "MUSTER_INTEGRATION_SECRETS": ({"trigger"}, False),
    "MUSTER_CLOUDWATCH_TOPIC_ARNS": ({"trigger"}, False),
    "MUSTER_WRITEBACK": ({"dispatch"}, False),
    "MUSTER_SIEM": ({"tick", "dispatch"}, False),
    "MUSTER_GATEWAYS": ({"trigger", "dispatch"}, False),
}

# Variables the code may mention that are not deployment configuration.
NOT_DEPLOYMENT = re.compile(r"^MUSTER_(TEST_|SHARED_SECRET$|LOG)")

AUDIT_READS = {"dynamodb:getitem", "dynamodb:batchgetitem", "dynamodb:query", "dynamodb:scan",
               "dynamodb:partiqlselect"}

errors = []


def error(msg):
    errors.append(msg)


def function_resources(template):
    return {name: r for name, r in template.get("Resources", {}).items()
            if r.get("Type") == "AWS::Serverless::Function"}


def workspace_binaries(workspace):
    out = subprocess.run(
        ["cargo", "metadata", "--no-deps", "--format-version", "1"],
        cwd=workspace, check=True, capture_output=True, text=True,
    ).stdout
    meta = json.loads(out)
    root = os.path.join(meta["workspace_root"], "functions") + os.sep
    bins = {}
    for p in meta["packages"]:
        if not p["manifest_path"].startswith(root):
            continue
        for t in p["targets"]:
            if "bin" in t["kind"]:
                bins[t["name"]] = p["manifest_path"]
    return bins


def check_functions(template, workspace):
    functions = function_resources(template)
    in_template = {}
    for name, r in functions.items():
        uri = r.get("Properties", {}).get("CodeUri")
        m = re.fullmatch(r"\.\./target/lambda/(muster-[a-z]+)/bootstrap\.zip", uri if isinstance(uri, str) else "")
        if not m:
            error(f"{name}: CodeUri {uri!r} is not ../target/lambda/muster-NAME/bootstrap.zip")
            continue
        binary = m.group(1)
        in_template[binary] = name
        fname = r["Properties"].get("FunctionName")
        expected = {"Fn::Sub": f"muster-${{Stage}}-{binary.removeprefix('muster-')}"}
        if fname != expected:
            error(f"{name}: FunctionName {fname!r}, expected {expected!r}")
    built = workspace_binaries(workspace)
    for b in sorted(set(built) - set(in_template)):
        error(f"the workspace builds {b} ({built[b]}) but the template has no function for it")
    for b in sorted(set(in_template) - set(built)):
        error(f"the template's {in_template[b]} needs {b}, which no crate under functions/ builds")
    expected = {f"muster-{f}" for f in FUNCTIONS}
    if set(in_template) != expected:
        error(f"the template's functions {sorted(in_template)} differ from the contract's {sorted(expected)}")
    globals_fn = template.get("Globals", {}).get("Function", {})
    if globals_fn.get("Runtime") != "provided.al2023" or globals_fn.get("Handler") != "bootstrap":
        error("Globals.Function must set Runtime provided.al2023 and Handler bootstrap")
    return {b.removeprefix("muster-"): n for b, n in in_template.items()}


RUST_FUNCTIONS = {"Trigger": "trigger", "Dispatch": "dispatch", "Receipt": "receipt", "Tick": "tick"}


def config_variables(workspace):
    """VARIABLES of aws/src/runtime/config.rs: name -> functions requiring it."""
    path = os.path.join(workspace, "aws", "src", "runtime", "config.rs")
    with open(path, encoding="utf-8") as fh:
        text = fh.read()
    m = re.search(r"pub const VARIABLES: \[\(&str, &\[Function\]\); (\d+)\] = \{(.*?)\n\};", text, re.S)
    if not m:
        error(f"{path}: no VARIABLES table")
        return {}
    out = {}
    for name, funcs in re.findall(r'\("(MUSTER_[A-Z0-9_]+)",\s*(ALL|&\[[A-Za-z, ]*\])\)', m.group(2)):
        if funcs == "ALL":
            out[name] = set(ALL)
        else:
            out[name] = {RUST_FUNCTIONS[f.strip()] for f in funcs[2:-1].split(",") if f.strip()}
    if len(out) != int(m.group(1)):
        error(f"{path}: read {len(out)} of the {m.group(1)} VARIABLES entries")
    return out


def check_contract(workspace):
    config = config_variables(workspace)
    for var in sorted(set(config) - set(CONTRACT)):
        error(f"the configuration reads {var}, which the deployment contract lacks")
    for var in sorted(set(CONTRACT) - set(config)):
        error(f"the deployment contract names {var}, which the configuration does not read")
    for var in sorted(set(config) & set(CONTRACT)):
        users, required = CONTRACT[var]
        contract_requires = set(users) if required else set()
        if config[var] != contract_requires:
            error(f"{var}: the configuration requires it of {sorted(config[var])}, the contract of {sorted(contract_requires)}")


def check_environment(template, by_function, workspace):
    common = template.get("Globals", {}).get("Function", {}).get("Environment", {}).get("Variables", {})
    resources = template["Resources"]
    for short, name in sorted(by_function.items()):
        own = resources[name]["Properties"].get("Environment", {}).get("Variables", {})
        both = set(common) & set(own)
        if both:
            error(f"{name}: {sorted(both)} set both in Globals and on the function")
        names = set(common) | set(own)
        for var in sorted(names):
            if not var.startswith("MUSTER_"):
                error(f"{name}: {var} is not a Muster variable (MUSTER_*)")
            elif var not in CONTRACT:
                error(f"{name}: {var} is not in the deployment contract")
            elif short not in CONTRACT[var][0]:
                error(f"{name}: {var} is set but, by the contract, only {sorted(CONTRACT[var][0])} read it")
        for var, (users, required) in sorted(CONTRACT.items()):
            if short in users and required and var not in names:
                error(f"{name}: required {var} is not set")
    # What the code mentions (functions/ and the runtime config loader).
    for d in ("functions", os.path.join("aws", "src", "runtime")):
        base = os.path.join(workspace, d)
        for dirpath, _, files in os.walk(base):
            for f in files:
                if not f.endswith(".rs"):
                    continue
                path = os.path.join(dirpath, f)
                with open(path, encoding="utf-8") as fh:
                    for var in sorted(set(re.findall(r"\bMUSTER_[A-Z0-9_]+\b", fh.read()))):
                        if var not in CONTRACT and not NOT_DEPLOYMENT.match(var):
                            error(f"{os.path.relpath(path, workspace)} reads {var}, which is not in the deployment contract")


def refers_to(value, logical_id):
    """Whether a Resource names the table (its ARN, or its name in a Sub);
    its stream ARN (the archive, read by tick) is not the table."""
    text = json.dumps(value)
    return (f'"Fn::GetAtt": ["{logical_id}", "Arn"]' in text or f'"Ref": "{logical_id}"' in text
            or f"${{{logical_id}.Arn}}" in text or f"${{{logical_id}}}" in text)


def statements(policy_document):
    st = policy_document.get("Statement", [])
    if isinstance(st, dict):
        st = [st]
    for s in st:
        if isinstance(s, dict) and "Fn::If" in s:  # conditional statement
            for branch in s["Fn::If"][1:]:
                if isinstance(branch, dict) and "Effect" in branch:
                    yield branch
        elif isinstance(s, dict):
            yield s


def listify(v):
    return v if isinstance(v, list) else [v]


def seals_only(statement):
    """A statement limited by dynamodb:LeadingKeys to seal items
    (`INC#<id>#SEAL`) reads no entry of the trail."""
    cond = statement.get("Condition", {})
    for op, body in cond.items():
        if op.startswith("ForAllValues:") and "dynamodb:LeadingKeys" in body:
            keys = listify(body["dynamodb:LeadingKeys"])
            return bool(keys) and all(k.endswith("#SEAL") for k in keys)
    return False


def check_iam(translated):
    resources = translated["Resources"]
    roles = {n: r for n, r in resources.items() if r["Type"] == "AWS::IAM::Role"}
    function_roles = {}
    for n, r in resources.items():
        if r["Type"] == "AWS::Lambda::Function":
            role = r["Properties"].get("Role", {})
            if isinstance(role, dict) and "Fn::GetAtt" in role:
                function_roles[role["Fn::GetAtt"][0]] = n
    readers = set()
    for rn, r in roles.items():
        for pol in r["Properties"].get("Policies", []):
            for s in statements(pol["PolicyDocument"]):
                if s.get("Effect") != "Allow":
                    continue
                actions = {a.lower() for a in listify(s.get("Action", []))}
                res = s.get("Resource", s.get("NotResource"))
                if any(a in ("*", "dynamodb:*") or a in AUDIT_READS or a.startswith("dynamodb:get") for a in actions) \
                        and refers_to(res, "AuditTable") and not seals_only(s):
                    readers.add(rn)
                if res == "*" and any(a.split(":")[0] in ("dynamodb", "kms", "sqs", "s3", "sns", "ses") or a == "*" for a in actions):
                    error(f"{rn}: {sorted(actions)} on every resource")
    trigger_role = next((role for role, fn in function_roles.items() if fn == "TriggerFunction"), None)
    if trigger_role is None:
        error("TriggerFunction has no role of its own in the template")
    for rn in sorted(readers - {trigger_role}):
        error(f"{rn} (function {function_roles.get(rn, 'none')}) may read the audit table: only trigger may")
    if trigger_role and trigger_role not in readers:
        error(f"{trigger_role} cannot read the audit table, but trigger serves GET /v1/incidents/{{id}}/audit")
    if len(set(function_roles)) != len(function_roles) or len(function_roles) != len(FUNCTIONS):
        error(f"every function needs its own role: {function_roles}")


def check_skips(template):
    for name, r in template.get("Resources", {}).items():
        skips = r.get("Metadata", {}).get("checkov", {}).get("skip", [])
        for s in skips:
            reason = (s.get("comment") or "").strip()
            if not re.fullmatch(r"CKV2?_AWS_\d+", str(s.get("id", ""))):
                error(f"{name}: checkov skip with an unexpected id {s.get('id')!r}")
            if len(reason) < 40:
                error(f"{name}: checkov skip {s.get('id')} needs a written reason (comment)")


def main():
    if len(sys.argv) not in (3, 4):
        print(__doc__, file=sys.stderr)
        return 2
    with open(sys.argv[1], encoding="utf-8") as f:
        template = yaml_parse(f.read())
    with open(sys.argv[2], encoding="utf-8") as f:
        translated = json.load(f)
    workspace = sys.argv[3] if len(sys.argv) == 4 else os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    by_function = check_functions(template, workspace)
    check_environment(template, by_function, workspace)
    check_contract(workspace)
    check_iam(translated)
    check_skips(template)
    if errors:
        for e in errors:
            print(f"error: {e}", file=sys.stderr)
        print(f"{len(errors)} problem(s) in {sys.argv[1]}", file=sys.stderr)
        return 1
    print(f"ok: functions {sorted(by_function)} match the workspace; environment, audit access and checkov skips follow the contract")
    return 0


if __name__ == "__main__":
    sys.exit(main())
