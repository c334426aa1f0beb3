#!/usr/bin/env python3
"""Evaluates Rego policies under the real OPA engine (PyPI
opa-golib-python-bindings, which embeds OPA's Go library), for kiln's
cross-check of its own (regorus) decisions.

Usage: opa_eval.py PACKAGE POLICY.rego... < inputs.jsonl
Prints, for each input line, the package's document (every rule's value)
as one JSON line: what `opa eval data.PACKAGE` gives.
"""
import json
import sys

from opa_bindings import OpaEngine, OpaUndefinedError


def main():
    package = sys.argv[1].removeprefix("data.")
    engine = OpaEngine()
    for path in sys.argv[2:]:
        with open(path, encoding="utf-8") as f:
            engine.add_policy(path, f.read())
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            doc = engine.eval_document(package, input=json.loads(line))
        except OpaUndefinedError:
            doc = {}
        print(json.dumps(doc, sort_keys=True))


if __name__ == "__main__":
    main()
