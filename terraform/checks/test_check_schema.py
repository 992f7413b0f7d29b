#!/usr/bin/env python3
"""The provider-schema check catches what it must: a misspelt argument, a
misspelt nested block argument, an unknown resource type, an undeclared
variable, a variable without a description, a module argument the module
does not declare; and passes a correct module. Run by .ci/test."""

import os
import subprocess
import sys
import tempfile

CHECK = os.path.join(os.path.dirname(os.path.abspath(__file__)), "check_schema.py")

GOOD = '''
variable "cidr" {
  type        = string
  description = "The VPC's block."
}

resource "aws_vpc" "main" {
  cidr_block           = var.cidr
  enable_dns_hostnames = true
}

resource "aws_s3_bucket_lifecycle_configuration" "media" {
  bucket = "b"
  rule {
    id     = "expire"
    status = "Enabled"
    expiration {
      days = 30
    }
  }
}
'''

BAD = {
    "a misspelt argument": ('resource "aws_vpc" "main" {\n  cidr_blok = "10.0.0.0/16"\n}\n', "no argument or block 'cidr_blok'"),
    "a misspelt nested argument": (
        'resource "aws_s3_bucket_lifecycle_configuration" "m" {\n  bucket = "b"\n  rule {\n    id = "x"\n    status = "Enabled"\n    expiration {\n      dayz = 30\n    }\n  }\n}\n',
        "rule.expiration: no argument or block 'dayz'",
    ),
    "an unknown type": ('resource "aws_vpcc" "main" {\n  cidr_block = "10.0.0.0/16"\n}\n', "no such type"),
    "an undeclared variable": ('resource "aws_vpc" "main" {\n  cidr_block = var.nowhere\n}\n', "var.nowhere is used but not declared"),
    "a variable without a description": ('variable "x" {\n  type = string\n}\n', "variable x: no description"),
}


def run(files):
    with tempfile.TemporaryDirectory() as root:
        for path, text in files.items():
            full = os.path.join(root, path)
            os.makedirs(os.path.dirname(full), exist_ok=True)
            with open(full, "w", encoding="utf-8") as f:
                f.write(text)
        done = subprocess.run([sys.executable, CHECK, root], capture_output=True, text=True, check=False)
        return done.returncode, done.stdout


def main():
    failures = []
    code, out = run({"m/main.tf": GOOD})
    if code != 0:
        failures.append(f"a correct module was refused:\n{out}")
    for what, (text, expected) in BAD.items():
        code, out = run({"m/main.tf": text})
        if code == 0 or expected not in out:
            failures.append(f"{what}: expected failure with {expected!r}, got {code}:\n{out}")
    code, out = run({
        "m/variables.tf": 'variable "a" {\n  type = string\n  description = "a"\n}\n',
        "env/main.tf": 'module "m" {\n  source = "../m"\n  a = "x"\n  b = "y"\n}\n',
    })
    if code == 0 or "has no variable 'b'" not in out:
        failures.append(f"a module argument the module lacks: got {code}:\n{out}")
    for failure in failures:
        print("FAIL", failure)
    print(f"check_schema.py: {len(BAD) + 2 - len(failures)} of {len(BAD) + 2} cases as expected")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
