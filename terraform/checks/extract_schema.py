#!/usr/bin/env python3
"""Extracts the AWS provider's Terraform schema from the npm package
@cdktf/provider-aws (its bindings are generated from the provider's schema)
into terraform/checks/aws-provider-schema.json: for every resource and data
source type, its configurable arguments and nested blocks.

Run once per provider upgrade:
    npm pack @cdktf/provider-aws@21.22.1 && tar xzf cdktf-provider-aws-*.tgz
    python3 terraform/checks/extract_schema.py package
"""

import json
import os
import re
import sys

TYPE = re.compile(r"terraformResourceType: '([a-z0-9_]+)'")
VERSION = re.compile(r"providerVersion: '([0-9.]+)'")
FUNC = re.compile(r"function (\w+)ToHclTerraform\(struct\) \{")
ENTRY = re.compile(
    r"\n\s+(\w+): \{\n\s+value: ([^\n]*),\n\s+isBlock: (true|false),", re.M
)
CONVERTER = re.compile(r"(?<![.\w])(\w+)ToHclTerraform\b")


def attrs_of(body):
    """(name, is_block, converter or None) of one `const attrs = {...}`."""
    out = []
    for name, value, is_block in ENTRY.findall(body):
        converters = [c for c in CONVERTER.findall(value) if c not in ("cdktf",)]
        out.append((name, is_block == "true", converters[0] if converters else None))
    return out


def block_of(text, start):
    """The text of the `{...}` starting at `start` (balanced braces)."""
    depth = 0
    for i in range(start, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[start : i + 1]
    return text[start:]


def resolve(attrs, functions, depth=0):
    schema = {}
    for name, is_block, converter in attrs:
        if is_block and converter in functions and depth < 12:
            schema[name] = resolve(functions[converter], functions, depth + 1)
        elif is_block:
            schema[name] = {}
        else:
            schema[name] = None
    return schema


def main(package):
    lib = os.path.join(package, "lib")
    resources, data_sources, versions = {}, {}, set()
    for entry in sorted(os.listdir(lib)):
        folder = os.path.join(lib, entry)
        if not os.path.isdir(folder):
            continue
        texts = []
        for name in sorted(os.listdir(folder)):
            if name.endswith(".js"):
                with open(os.path.join(folder, name), encoding="utf-8") as f:
                    texts.append(f.read())
        text = "\n".join(texts)
        kind = TYPE.search(text)
        if not kind:
            continue
        versions.update(VERSION.findall(text))
        functions = {}
        for match in FUNC.finditer(text):
            body = block_of(text, match.end() - 1)
            marker = body.find("const attrs = {")
            if marker >= 0:
                functions[match.group(1)] = attrs_of(block_of(body, marker + len("const attrs = ")))
        synth = text.find("synthesizeHclAttributes() {")
        if synth < 0:
            continue
        body = block_of(text, synth + len("synthesizeHclAttributes() "))
        marker = body.find("const attrs = {")
        top = attrs_of(block_of(body, marker + len("const attrs = ")))
        target = data_sources if entry.startswith("data-") else resources
        target[kind.group(1)] = resolve(top, functions)
    schema = {
        "source": "npm @cdktf/provider-aws (bindings generated from the provider schema)",
        "provider_versions": sorted(versions),
        "resources": resources,
        "data_sources": data_sources,
    }
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "aws-provider-schema.json")
    with open(out, "w", encoding="utf-8") as f:
        json.dump(schema, f, sort_keys=True, separators=(",", ":"))
        f.write("\n")
    print(f"{len(resources)} resources, {len(data_sources)} data sources, provider {sorted(versions)} -> {out}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "package")
