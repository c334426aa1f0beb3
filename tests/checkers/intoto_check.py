#!/usr/bin/env python3
"""Independent check of in-toto statements, with the in-toto attestation
project's own Python bindings (PyPI `in-toto-attestation`), not kiln's code.

    intoto_check.py STATEMENT.json...

Each file holds one statement (the DSSE payload, decoded). It must parse
strictly (protobuf JSON, unknown fields refused) as an in-toto v1
Statement and pass `Statement.validate()`; every resource descriptor
(subject, and for SLSA v1 provenance every resolved dependency and
byproduct) must parse strictly and pass `ResourceDescriptor.validate()`,
with lowercase hex digests of the right length for the algorithms the
spec names; a SLSA v1 predicate must parse strictly as the bindings'
Provenance message and carry the fields the SLSA spec requires; a
test-result v0.1 predicate must parse strictly as the bindings' TestResult
message, with a known `result` and valid `configuration` descriptors.
Exit 0 and "ok PATH" for each, else exit 1 naming the problem.
"""
import json
import re
import sys

import google.protobuf.json_format as pb_json
from google.protobuf import struct_pb2
from in_toto_attestation.v1 import statement_pb2, resource_descriptor_pb2
from in_toto_attestation.v1.statement import Statement
from in_toto_attestation.v1.resource_descriptor import ResourceDescriptor
from in_toto_attestation.predicates.provenance.v1 import provenance_pb2
from in_toto_attestation.predicates.test_result.v0 import test_result_pb2

SLSA_V1 = "https://slsa.dev/provenance/v1"
TEST_RESULT_V01 = "https://in-toto.io/attestation/test-result/v0.1"
HEX_LEN = {"sha256": 64, "sha512": 128, "sha1": 40, "sha384": 96}


def check_rd(rd_json, where):
    rd = resource_descriptor_pb2.ResourceDescriptor()
    pb_json.Parse(json.dumps(rd_json), rd, ignore_unknown_fields=False)
    ResourceDescriptor.copy_from_pb(rd).validate()
    for alg, value in rd.digest.items():
        n = HEX_LEN.get(alg)
        if n is not None and not re.fullmatch("[0-9a-f]{%d}" % n, value):
            raise ValueError(f"{where}: digest {alg}={value!r} is not {n} lowercase hex digits")


def check(path):
    with open(path, "rb") as f:
        doc = json.load(f)
    st = statement_pb2.Statement()
    pb_json.Parse(json.dumps(doc), st, ignore_unknown_fields=False)
    Statement.copy_from_pb(st).validate()
    for i, s in enumerate(doc["subject"]):
        check_rd(s, f"subject[{i}]")
    if doc["predicateType"] == SLSA_V1:
        prov = provenance_pb2.Provenance()
        pb_json.Parse(json.dumps(doc["predicate"]), prov, ignore_unknown_fields=False)
        bd, rd = doc["predicate"]["buildDefinition"], doc["predicate"]["runDetails"]
        if not prov.build_definition.build_type:
            raise ValueError("buildDefinition.buildType is required")
        if "externalParameters" not in bd:
            raise ValueError("buildDefinition.externalParameters is required")
        if not prov.run_details.builder.id:
            raise ValueError("runDetails.builder.id is required")
        for i, d in enumerate(bd.get("resolvedDependencies", [])):
            check_rd(d, f"resolvedDependencies[{i}]")
        for i, b in enumerate(rd.get("byproducts", [])):
            check_rd(b, f"byproducts[{i}]")
    if doc["predicateType"] == TEST_RESULT_V01:
        tr = test_result_pb2.TestResult()
        pb_json.Parse(json.dumps(doc["predicate"]), tr, ignore_unknown_fields=False)
        if tr.result not in ("PASSED", "WARNED", "FAILED"):
            raise ValueError(f"result {tr.result!r} is not PASSED, WARNED or FAILED")
        if not tr.configuration:
            raise ValueError("configuration is required")
        for i, c in enumerate(doc["predicate"]["configuration"]):
            check_rd(c, f"configuration[{i}]")


def main():
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    bad = 0
    for path in sys.argv[1:]:
        try:
            check(path)
            print(f"ok {path}")
        except Exception as e:  # noqa: BLE001 - every failure is a finding
            print(f"INVALID {path}: {type(e).__name__}: {e}", file=sys.stderr)
            bad += 1
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
