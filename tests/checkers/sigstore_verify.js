#!/usr/bin/env node
// Independent check with sigstore-js (`@sigstore/verify` 3.x from npm), not
// kiln's code. Public-key mode: no Fulcio certificate, no Rekor entry, no
// timestamp (kiln signs with a key, as `cosign sign-blob --key` does
// offline), so those thresholds are 0 and only the signature is judged.
//
//   sigstore_verify.js PUB.pem blob FILE SIG_BASE64_FILE
//   sigstore_verify.js PUB.pem dsse ENVELOPE.json
//
// `blob`: the signature (base64 of ASN.1 DER ECDSA, cosign's `.sig`) over
// the file. `dsse`: a DSSE envelope. Exit 0 when verified, 1 otherwise.
// Finds the module in NODE_PATH (scripts/ci/install-deps.sh installs it in
// /opt/kiln-node/node_modules).
'use strict';
const fs = require('fs');
const crypto = require('crypto');
const { bundleFromJSON } = require('@sigstore/bundle');
const { Verifier, toSignedEntity, toTrustMaterial } = require('@sigstore/verify');

function main() {
  const [pubPath, mode, target, sigPath] = process.argv.slice(2);
  if (!pubPath || !['blob', 'dsse'].includes(mode) || !target) {
    console.error('usage: sigstore_verify.js PUB.pem blob FILE SIG | dsse ENVELOPE');
    return 2;
  }
  const der = crypto.createPublicKey(fs.readFileSync(pubPath)).export({ type: 'spki', format: 'der' });
  const hint = 'kiln-test-key';
  const verificationMaterial = { publicKey: { hint }, tlogEntries: [], timestampVerificationData: { rfc3161Timestamps: [] } };
  let json;
  let artifact;
  if (mode === 'blob') {
    artifact = fs.readFileSync(target);
    const sig = fs.readFileSync(sigPath, 'utf8').trim();
    json = {
      mediaType: 'application/vnd.dev.sigstore.bundle.v0.3+json',
      verificationMaterial,
      messageSignature: {
        messageDigest: { algorithm: 'SHA2_256', digest: crypto.createHash('sha256').update(artifact).digest('base64') },
        signature: sig,
      },
    };
  } else {
    const env = JSON.parse(fs.readFileSync(target, 'utf8'));
    json = {
      mediaType: 'application/vnd.dev.sigstore.bundle.v0.3+json',
      verificationMaterial,
      dsseEnvelope: env,
    };
  }
  const bundle = bundleFromJSON(json);
  const trust = toTrustMaterial(
    { mediaType: '', tlogs: [], certificateAuthorities: [], ctlogs: [], timestampAuthorities: [] },
    { [hint]: { rawBytes: der, keyDetails: 'PKIX_ECDSA_P256_SHA_256' } },
  );
  const verifier = new Verifier(trust, { tlogThreshold: 0, ctlogThreshold: 0, timestampThreshold: 0 });
  try {
    verifier.verify(toSignedEntity(bundle, artifact));
  } catch (e) {
    console.error(`NOT VERIFIED ${target}: ${e.code || ''} ${e.message}`);
    return 1;
  }
  console.log(`verified ${target}`);
  return 0;
}
process.exit(main());
