#!/bin/sh
# Runs inside a remote build instance (QEMU, AMI): trades the single-use,
# short-lived wrapping token kiln handed over for the build's secrets, and
# prints them as shell `export` lines. No secret value travels in a command
# line, in SSM command history or in a file:
#
#   eval "$(VAULT_ADDR=https://vault:8200 KILN_WRAPPED_TOKEN=… vault-unwrap.sh)"
#
# The token is sent on stdin to curl (not in its arguments). It can be
# unwrapped once; a second try, or one after its TTL, fails.
set -eu
: "${VAULT_ADDR:?VAULT_ADDR is not set}"
: "${KILN_WRAPPED_TOKEN:?KILN_WRAPPED_TOKEN is not set}"
headers=$(printf 'X-Vault-Token: %s\n' "$KILN_WRAPPED_TOKEN")
if [ -n "${VAULT_NAMESPACE:-}" ]; then
  headers=$(printf '%s\nX-Vault-Namespace: %s\n' "$headers" "$VAULT_NAMESPACE")
fi
set -- -sS --fail -X POST -H @-
if [ -n "${VAULT_CACERT:-}" ]; then set -- "$@" --cacert "$VAULT_CACERT"; fi
resp=$(printf '%s\n' "$headers" | curl "$@" "$VAULT_ADDR/v1/sys/wrapping/unwrap") || {
  echo "vault-unwrap: the wrapping token was refused (used already, expired or wrong)" >&2
  exit 1
}
if command -v jq >/dev/null 2>&1; then
  printf '%s' "$resp" | jq -r '.data | to_entries[] | "export \(.key)=\(.value | tostring | @sh)"'
else
  printf '%s' "$resp" | python3 -c 'import json, shlex, sys
d = json.load(sys.stdin)["data"]
print("\n".join("export %s=%s" % (k, shlex.quote(str(v))) for k, v in d.items()))'
fi
