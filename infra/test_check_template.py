#!/usr/bin/env python3
"""Proves that infra/check_template.py catches what it is for: the real
template passes against a stub workspace with the four function crates,
and each mutation below (a missing or extra function, an audit read by
another function, a variable outside the contract, a missing required
variable, a checkov skip without a reason) fails with its message; and
infra/check_zips.py refuses a zip built for another architecture.

Usage: test_check_template.py (run by scripts/infra-check in the SAM venv)
"""

import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
TEMPLATE = os.path.join(HERE, "template.yaml")


CONFIG = os.path.join(os.path.dirname(HERE), "aws", "src", "runtime", "config.rs")


def stub_workspace(root, functions, config=None):
    """The function crates, and the configuration's variable list (the
    real config.rs, or `config` text)."""
    runtime = os.path.join(root, "aws", "src", "runtime")
    os.makedirs(runtime)
    with open(CONFIG) as src, open(os.path.join(runtime, "config.rs"), "w") as dst:
        dst.write(config if config is not None else src.read())
    with open(os.path.join(root, "Cargo.toml"), "w") as f:
        members = ", ".join(f'"functions/{n}"' for n in functions)
        f.write(f'[workspace]\nresolver = "3"\nmembers = [{members}]\n')
    for n in functions:
        src = os.path.join(root, "functions", n, "src")
        os.makedirs(src)
        with open(os.path.join(root, "functions", n, "Cargo.toml"), "w") as f:
            f.write(f'[package]\nname = "muster-{n}"\nversion = "0.1.0"\nedition = "2024"\n')
        with open(os.path.join(src, "main.rs"), "w") as f:
            f.write('fn main() { let _ = std::env::var("MUSTER_STAGE"); }\n')


def run_check(tmp, template_text, workspace):
    sam = os.path.join(tmp, "t.yaml")
    cfn = os.path.join(tmp, "t.json")
    with open(sam, "w") as f:
        f.write(template_text)
    subprocess.run([sys.executable, os.path.join(HERE, "translate.py"), sam, cfn],
                   check=True, capture_output=True, text=True)
    p = subprocess.run([sys.executable, os.path.join(HERE, "check_template.py"), sam, cfn, workspace],
                       capture_output=True, text=True)
    return p.returncode, p.stdout + p.stderr


def replace_once(text, old, new, after=None):
    start = text.index(after) if after else 0
    i = text.index(old, start)
    return text[:i] + new + text[i + len(old):]


def fake_zip(root, name, machine):
    """A zip whose bootstrap is an ELF header for `machine` (e_machine)."""
    import struct
    import zipfile
    d = os.path.join(root, "target", "lambda", name)
    os.makedirs(d, exist_ok=True)
    head = b"\x7fELF\x02\x01\x01" + b"\x00" * 9 + struct.pack("<HH", 2, machine)
    with zipfile.ZipFile(os.path.join(d, "bootstrap.zip"), "w") as z:
        z.writestr("bootstrap", head + b"\x00" * 44)


def zip_cases(tmp):
    """infra/check_zips.py: matching zips pass, an arm64 zip for an x86_64
    template fails, and --require fails with no zips."""
    check = [sys.executable, os.path.join(HERE, "check_zips.py"), "--arch", "x86_64"]
    failures = 0
    root = os.path.join(tmp, "zips")
    os.makedirs(root)
    for name, setup, want_code, want_text in [
        ("no zips with --require", lambda: None, 1, "no Lambda zips built"),
        ("x86_64 zips for an x86_64 template", lambda: fake_zip(root, "muster-a", 0x3E), 0, "x86_64 ok"),
        ("an arm64 zip for an x86_64 template", lambda: fake_zip(root, "muster-b", 0xB7), 1, "MISMATCH"),
    ]:
        setup()
        p = subprocess.run(check + ["--require"], cwd=root, capture_output=True, text=True)
        if p.returncode != want_code or want_text not in p.stdout:
            print(f"FAIL: check_zips, {name}: exit {p.returncode}\n{p.stdout}{p.stderr}")
            failures += 1
        else:
            print(f"ok: check_zips, {name}")
    return failures


def main():
    with open(TEMPLATE) as f:
        base = f.read()
    cases = [
        ("another function reads the audit table",
         lambda t: replace_once(t, "                Action: dynamodb:PutItem\n",
                                "                Action: [dynamodb:PutItem, dynamodb:Query]\n",
                                after="  DispatchRole:"),
         "DispatchRole (function DispatchFunction) may read the audit table"),
        ("a variable outside the contract",
         lambda t: replace_once(t, "          MUSTER_AUDIT_ARCHIVE_BUCKET:",
                                "          MUSTER_EXTRA: x\n          MUSTER_AUDIT_ARCHIVE_BUCKET:"),
         "TickFunction: MUSTER_EXTRA is not in the deployment contract"),
        ("a variable on a function that does not read it",
         lambda t: replace_once(t, "          MUSTER_AUDIT_ARCHIVE_BUCKET:",
                                "          MUSTER_SES_FROM: x\n          MUSTER_AUDIT_ARCHIVE_BUCKET:"),
         "TickFunction: MUSTER_SES_FROM is set but"),
        ("a required variable missing",
         lambda t: replace_once(t, "          MUSTER_SES_FROM: !Ref SesFromAddress\n", ""),
         "DispatchFunction: required MUSTER_SES_FROM is not set"),
        ("a function the workspace does not build",
         lambda t: t.replace("muster-tick/bootstrap.zip", "muster-ticker/bootstrap.zip"),
         "needs muster-ticker, which no crate under functions/ builds"),
        ("a checkov skip without a reason",
         lambda t: replace_once(t, "          - id: CKV_AWS_18\n",
                                "          - id: CKV_AWS_21\n            comment: x\n          - id: CKV_AWS_18\n"),
         "checkov skip CKV_AWS_21 needs a written reason"),
    ]
    failures = 0
    with tempfile.TemporaryDirectory() as tmp:
        ws = os.path.join(tmp, "ws")
        os.makedirs(ws)
        stub_workspace(ws, ["trigger", "dispatch", "receipt", "tick"])
        code, out = run_check(tmp, base, ws)
        if code != 0:
            print(f"FAIL: the template fails against a workspace with the four functions:\n{out}")
            failures += 1
        else:
            print("ok: the template passes against the four functions")
        for name, mutate, expected in cases:
            code, out = run_check(tmp, mutate(base), ws)
            if code == 0 or expected not in out:
                print(f"FAIL: {name}: exit {code}, expected {expected!r} in:\n{out}")
                failures += 1
            else:
                print(f"ok: {name} is caught")
        extra = os.path.join(tmp, "ws2")
        os.makedirs(extra)
        stub_workspace(extra, ["trigger", "dispatch", "receipt", "tick", "report"])
        code, out = run_check(tmp, base, extra)
        if code == 0 or "the workspace builds muster-report" not in out:
            print(f"FAIL: an extra function crate is not caught: exit {code}\n{out}")
            failures += 1
        else:
            print("ok: a function crate without a template function is caught")
        with open(CONFIG) as f:
            real = f.read()
        drifted = os.path.join(tmp, "ws3")
        os.makedirs(drifted)
        stub_workspace(drifted, ["trigger", "dispatch", "receipt", "tick"],
                       config=real.replace('("MUSTER_STAGE", ALL),', '("MUSTER_STAGE", ALL),\n        ("MUSTER_NEW_KNOB", &[Tick]),')
                       .replace("); 33] = {", "); 34] = {"))
        code, out = run_check(tmp, base, drifted)
        if code == 0 or "the configuration reads MUSTER_NEW_KNOB, which the deployment contract lacks" not in out:
            print(f"FAIL: a variable the configuration reads but the contract lacks is not caught: exit {code}\n{out}")
            failures += 1
        else:
            print("ok: a variable the configuration reads but the contract lacks is caught")
        failures += zip_cases(tmp)
    total = len(cases) + 3 + 3
    print(f"{total - failures} passed, {failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
