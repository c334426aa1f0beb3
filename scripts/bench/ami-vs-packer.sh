#!/usr/bin/env bash
# Wall time of the same AMI build with kiln and with Packer 1.6.6 (Debian
# package `packer`, builder `amazon-ebs`), both against one moto server
# (`moto_server`, PyPI `moto[server]`) on a free loopback port: same region,
# same source AMI found by the same filter (owner `amazon`, one name in
# moto's default image list), same instance type, no provisioners and no
# communicator, static test credentials in the environment. moto is reset
# before every build; each build must leave exactly one new AMI and no
# instance, security group or key pair.
#
# Packer 1.6.6 needs nothing special against moto beyond
# `custom_endpoint_ec2` and `skip_region_validation` (moto's region list is
# not the SDK's check). `skip_metadata_api_check` and
# `skip_credential_validation` are set so neither tool can reach for IMDS
# or STS (kiln's credentials come from the same environment, so kiln never
# needs them either). 1.6.6 has no `skip_requesting_account_id`.
# Polling: no AWS_POLL_DELAY_SECONDS / AWS_MAX_ATTEMPTS, so Packer uses the
# AWS SDK waiters' own delays (15 s for instances and images) like a real
# user would; moto reports every instance running/stopped and every image
# available at once, and the waiters check before they first sleep, so
# neither tool ever waits a poll interval here. CHECKPOINT_DISABLE=1 stops
# Packer's background version check (no internet here; it would only add
# noise). One untimed warm-up build of each tool comes first (page cache).
#   scripts/bench/ami-vs-packer.sh [KILN_BINARY|none] [RUNS]
# With `none`, only Packer is built and timed.
set -euo pipefail
cd "$(dirname "$0")/../.."
kiln=${1:-target/release/kiln}
[ "$kiln" = none ] || kiln=$(realpath "$kiln")
runs=${2:-5}
name_pattern='ubuntu/images/hvm-ssd/ubuntu-xenial-16.04-amd64-server-*'
. scripts/bench/ami-common.sh
start_moto
unset AWS_PROFILE AWS_SESSION_TOKEN AWS_POLL_DELAY_SECONDS AWS_MAX_ATTEMPTS AWS_TIMEOUT_SECONDS
export CHECKPOINT_DISABLE=1

cat > "$dir/packer.json" <<JSON
{
  "builders": [{
    "type": "amazon-ebs",
    "region": "us-east-1",
    "custom_endpoint_ec2": "$endpoint",
    "skip_region_validation": true,
    "skip_metadata_api_check": true,
    "skip_credential_validation": true,
    "source_ami_filter": {
      "owners": ["amazon"],
      "filters": {"name": "$name_pattern"},
      "most_recent": true
    },
    "instance_type": "t3.micro",
    "communicator": "none",
    "ami_name": "packer-bench-{{uuid}}"
  }]
}
JSON

ami_template "$dir/kiln.toml" "$endpoint" "$name_pattern"

# What a build left in moto: "AMIS LEFTOVERS", the number of own AMIs named
# $1* and a list of what should have been cleaned up (instances not
# terminated, security groups other than `default`, key pairs).
state() {
  python3 - "$endpoint" "$1" <<'PY'
import sys, boto3
ec2 = boto3.client("ec2", endpoint_url=sys.argv[1], region_name="us-east-1")
amis = sum(i["Name"].startswith(sys.argv[2]) for i in ec2.describe_images(Owners=["self"])["Images"])
left = [i["InstanceId"] for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]
        if i["State"]["Name"] not in ("terminated", "shutting-down")]
left += [g["GroupId"] for g in ec2.describe_security_groups()["SecurityGroups"] if g["GroupName"] != "default"]
left += [k["KeyName"] for k in ec2.describe_key_pairs()["KeyPairs"]]
print(amis, ",".join(left) or "-")
PY
}
reset() { curl -sf -X POST "$endpoint/moto-api/reset" >/dev/null; }
ms() { echo $(( $(date +%s%N) / 1000000 )); }

# build TOOL: one build, timed in ms on stdout; exits on failure or when
# the build did not leave exactly one AMI.
build() {
  reset
  local t0 t1
  t0=$(ms)
  if [ "$1" = kiln ]; then
    # A fresh catalog log, manifests and journal every run, but what kiln
    # creates once per machine and catalog is kept, as on any machine that
    # ran kiln before: the catalog signing key (`keys/`) and the catalog's
    # fingerprint secret (`catalog/fingerprint.key`, written and fsynced
    # when a catalog is new).
    if [ -d "$dir/state" ]; then
      find "$dir/state" -mindepth 1 -maxdepth 1 ! -name keys ! -name catalog -exec rm -rf {} +
      find "$dir/state/catalog" -mindepth 1 -maxdepth 1 ! -name fingerprint.key -exec rm -rf {} +
    fi
    (cd "$dir" && KILN_STATE_DIR="$dir/state" NO_COLOR=1 "$kiln" build kiln.toml > "$dir/kiln.log" 2>&1) ||
      { echo "kiln build failed:" >&2; tail -20 "$dir/kiln.log" >&2; exit 1; }
  else
    (cd "$dir" && packer build -color=false packer.json > "$dir/packer.log" 2>&1) ||
      { echo "packer build failed:" >&2; tail -20 "$dir/packer.log" >&2; exit 1; }
  fi
  t1=$(ms)
  local n left
  read -r n left < <(state "$1-bench-")
  [ "$n" = 1 ] || { echo "$1 made $n AMIs named $1-bench-*, not 1" >&2; exit 1; }
  [ "$left" = - ] || { echo "$1 left behind: $left" >&2; exit 1; }
  echo $((t1 - t0))
}

tools=(packer)
[ "$kiln" = none ] || tools=(kiln packer)
for t in "${tools[@]}"; do build "$t" >/dev/null; done   # warm-up
kiln_ms=()
packer_ms=()
for i in $(seq "$runs"); do
  line="run $i:"
  if [ "$kiln" != none ]; then
    k=$(build kiln); kiln_ms+=("$k"); line+=" kiln ${k} ms,"
  fi
  p=$(build packer); packer_ms+=("$p"); line+=" packer ${p} ms"
  [ "$kiln" = none ] || line+=", ratio kiln/packer $(python3 -c "print(round($k/$p, 2))")"
  echo "$line"
done
median() { printf '%s\n' "$@" | python3 -c 'import sys, statistics; print(statistics.median(int(l) for l in sys.stdin))'; }
pm=$(median "${packer_ms[@]}")
if [ "$kiln" = none ]; then
  echo "packer median ${pm} ms ($runs run(s))"
else
  km=$(median "${kiln_ms[@]}")
  echo "kiln/packer = $(python3 -c "print(round($km/$pm, 2))") (median kiln ${km} ms, packer ${pm} ms, $runs run(s))"
fi
