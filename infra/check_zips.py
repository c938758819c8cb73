"""Checks that every Lambda zip is built for the architecture the template
deploys: the ELF machine of each `bootstrap` in target/lambda/*/bootstrap.zip
against the default of the template's `Architecture` parameter (or the one
given with --arch, for a stage deployed with a parameter override).

    python3 infra/check_zips.py [--arch arm64|x86_64] [--require]

Exits 1 on a mismatch, and with --require also when no zip is built.
"""

import argparse
import glob
import re
import struct
import sys
import zipfile

# ELF e_machine values (System V ABI): what Lambda calls each architecture.
MACHINES = {0x3E: "x86_64", 0xB7: "arm64"}


def template_architecture(path="infra/template.yaml"):
    text = open(path, encoding="utf-8").read()
    m = re.search(r"^  Architecture:\n(?:    .*\n)*?    Default: (\S+)", text, re.M)
    if not m:
        sys.exit(f"{path}: no Default for the Architecture parameter")
    return m.group(1)


def zip_machine(path):
    with zipfile.ZipFile(path) as z:
        with z.open("bootstrap") as f:
            head = f.read(20)
    if len(head) < 20 or head[:4] != b"\x7fELF":
        return "not an ELF binary"
    # e_machine: 2 bytes at offset 18, in the file's byte order (EI_DATA).
    order = "<" if head[5] == 1 else ">"
    (machine,) = struct.unpack(order + "H", head[18:20])
    return MACHINES.get(machine, f"machine 0x{machine:x}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", choices=sorted(MACHINES.values()))
    ap.add_argument("--require", action="store_true")
    args = ap.parse_args()
    want = args.arch or template_architecture()
    zips = sorted(glob.glob("target/lambda/*/bootstrap.zip"))
    if not zips:
        print("no Lambda zips built (scripts/build-lambdas checks them when it builds)")
        return 1 if args.require else 0
    bad = 0
    for z in zips:
        got = zip_machine(z)
        verdict = "ok" if got == want else f"MISMATCH: the template deploys {want}"
        bad += got != want
        print(f"{z}: {got} {verdict}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
