#!/usr/bin/env python3
"""Independent check of a DSSE envelope with securesystemslib (PyPI), not
kiln's code.

    dsse_verify.py PUBLIC_KEY.pem ENVELOPE.json PAYLOAD_TYPE [PAYLOAD_OUT]

The envelope must carry PAYLOAD_TYPE and a signature that verifies with
the PEM public key (ECDSA P-256, SHA-256) over DSSE's pre-authentication
encoding. securesystemslib matches signatures to keys by keyid, so the key
is given the keyid each signature names: the signature itself decides.
The verified payload is written to PAYLOAD_OUT when given.
Exit 0 when verified, 1 otherwise.
"""
import json
import sys

from cryptography.hazmat.primitives.serialization import load_pem_public_key
from securesystemslib.dsse import Envelope
from securesystemslib.signer import SSlibKey


def main():
    if len(sys.argv) not in (4, 5):
        print(__doc__, file=sys.stderr)
        return 2
    pem, env_path, payload_type = sys.argv[1:4]
    with open(pem, "rb") as f:
        public = load_pem_public_key(f.read())
    with open(env_path, "rb") as f:
        data = json.load(f)
    env = Envelope.from_dict(data)
    if env.payload_type != payload_type:
        print(f"payload type {env.payload_type!r} is not {payload_type!r}", file=sys.stderr)
        return 1
    template = SSlibKey.from_crypto(public)
    keys = [
        SSlibKey(keyid, template.keytype, template.scheme, dict(template.keyval))
        for keyid in env.signatures
    ]
    try:
        env.verify(keys, 1)
    except Exception as e:  # noqa: BLE001
        print(f"NOT VERIFIED {env_path}: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    if len(sys.argv) == 5:
        with open(sys.argv[4], "wb") as f:
            f.write(env.payload)
    print(f"verified {env_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
