#!/usr/bin/env python3
"""Offline checks of every .tf file under terraform/ (no provider can be
downloaded here, so `terraform validate` cannot run):

1. every resource and data source type exists in the AWS provider's schema
   (aws-provider-schema.json, extracted by extract_schema.py), and every
   argument and nested block name used exists there, at its depth;
2. every variable has a type and a description;
3. every `var.NAME` a module uses is declared in that module, and every
   argument a `module` block passes is a variable of the module it calls.

Usage: check_schema.py [ROOT] (default: the terraform/ folder holding this
script). Exits non-zero with one line per problem:
FILE: resource TYPE.NAME: ...
"""

import json
import os
import re
import sys

import hcl2

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
META = {"count", "for_each", "depends_on", "lifecycle", "provider", "provisioner", "connection"}
VAR_USE = re.compile(r"\bvar\.([A-Za-z_][A-Za-z0-9_-]*)")


def load(path):
    with open(path, encoding="utf-8") as f:
        return hcl2.load(f)


def blocks(value):
    """The bodies of a nested block as python-hcl2 gives it (a list of dicts)."""
    if isinstance(value, list) and all(isinstance(v, dict) for v in value):
        return value
    if isinstance(value, dict):
        return [value]
    return []


def check_body(body, schema, where, problems):
    for name, value in body.items():
        if name in META or name.startswith("__"):
            continue
        if name == "dynamic":
            for dynamic in blocks(value):
                for label, spec in dynamic.items():
                    if label not in schema:
                        problems.append(f"{where}: no block {label!r}")
                        continue
                    nested = schema[label]
                    for content in blocks(spec.get("content", [])):
                        if isinstance(nested, dict):
                            check_body(content, nested, f"{where}.{label}", problems)
            continue
        if name not in schema:
            problems.append(f"{where}: no argument or block {name!r}")
            continue
        nested = schema[name]
        if isinstance(nested, dict) and nested:
            for inner in blocks(value):
                check_body(inner, nested, f"{where}.{name}", problems)


def main(root):
    with open(os.path.join(HERE, "aws-provider-schema.json"), encoding="utf-8") as f:
        schema = json.load(f)
    problems = []
    modules = {}
    for folder, _, files in os.walk(root):
        if "/.terraform" in folder:
            continue
        tf = sorted(f for f in files if f.endswith(".tf"))
        if tf:
            modules[folder] = [(os.path.join(folder, f), load(os.path.join(folder, f))) for f in tf]
    declared_by_module = {}
    for folder, parsed in modules.items():
        declared = {}
        for path, doc in parsed:
            for variable in doc.get("variable", []):
                for name, spec in variable.items():
                    declared[name] = path
                    for required in ("type", "description"):
                        if required not in spec:
                            problems.append(f"{os.path.relpath(path, root)}: variable {name}: no {required}")
        declared_by_module[folder] = declared
    checked = 0
    for folder, parsed in modules.items():
        declared = declared_by_module[folder]
        for path, doc in parsed:
            rel = os.path.relpath(path, root)
            with open(path, encoding="utf-8") as f:
                for used in sorted(set(VAR_USE.findall(f.read()))):
                    if used not in declared:
                        problems.append(f"{rel}: var.{used} is used but not declared in {os.path.relpath(folder, root)}")
            for section, kinds in (("resource", schema["resources"]), ("data", schema["data_sources"])):
                for entry in doc.get(section, []):
                    for kind, instances in entry.items():
                        for name, body in instances.items():
                            where = f"{rel}: {section} {kind}.{name}"
                            checked += 1
                            if kind not in kinds:
                                problems.append(f"{where}: no such type in the AWS provider")
                                continue
                            check_body(body, kinds[kind], where, problems)
            for entry in doc.get("module", []):
                for name, body in entry.items():
                    source = body.get("source", "")
                    # Some python-hcl2 versions give a module's attributes as lists.
                    if isinstance(source, list):
                        source = source[0] if source else ""
                    target = os.path.normpath(os.path.join(folder, source))
                    if target not in declared_by_module:
                        problems.append(f"{rel}: module {name}: source {source} has no .tf files")
                        continue
                    for argument in body:
                        if argument in META | {"source", "version", "providers"} or argument.startswith("__"):
                            continue
                        if argument not in declared_by_module[target]:
                            problems.append(f"{rel}: module {name}: {source} has no variable {argument!r}")
    for problem in problems:
        print(problem)
    print(f"{checked} resources and data sources in {len(modules)} modules checked against "
          f"the AWS provider {', '.join(schema['provider_versions'])} schema: {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(os.path.abspath(sys.argv[1]) if len(sys.argv) > 1 else ROOT))
