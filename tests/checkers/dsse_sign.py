#!/usr/bin/env python3
"""Makes a DSSE envelope with securesystemslib (PyPI), not kiln's code: a
signed document kiln must accept from another producer.

    dsse_sign.py PAYLOAD_FILE PAYLOAD_TYPE ENVELOPE_OUT PUBLIC_KEY_OUT

A fresh ECDSA P-256 key (cryptography) signs PAYLOAD_FILE's bytes under
PAYLOAD_TYPE over DSSE's pre-authentication encoding; the envelope is
written as securesystemslib serializes it, the public key as PEM
(SubjectPublicKeyInfo, the form of a cosign `.pub`). The private key is
never written. Exit 0 on success.
"""
import json
import sys

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from securesystemslib.dsse import Envelope
from securesystemslib.signer import CryptoSigner


def main():
    if len(sys.argv) != 5:
        print(__doc__, file=sys.stderr)
        return 2
    payload_path, payload_type, env_out, pub_out = sys.argv[1:5]
    with open(payload_path, "rb") as f:
        payload = f.read()
    private = ec.generate_private_key(ec.SECP256R1())
    signer = CryptoSigner(private)
    env = Envelope(payload=payload, payload_type=payload_type, signatures={})
    env.sign(signer)
    with open(env_out, "w") as f:
        json.dump(env.to_dict(), f)
    pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    with open(pub_out, "wb") as f:
        f.write(pem)
    print(f"signed {payload_path} as {payload_type} into {env_out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
