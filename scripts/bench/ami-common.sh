# Sourced by ami-vs-packer.sh and ami-timeline.sh: what both share.

# start_moto: a moto server on a free loopback port, in its own process
# group so the EXIT trap stops it and anything it started; sets dir (a
# fresh temporary folder, removed by the trap), port, endpoint, motopid
# and the static AWS credentials both tools use.
start_moto() {
  dir=$(mktemp -d)
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  endpoint=http://127.0.0.1:$port
  setsid moto_server -H 127.0.0.1 -p "$port" > "$dir/moto.log" 2>&1 &
  motopid=$!
  trap 'kill -TERM -- "-$motopid" 2>/dev/null || true; wait "$motopid" 2>/dev/null || true; rm -rf "$dir"' EXIT
  for _ in $(seq 100); do curl -sf "$endpoint/moto-api/" >/dev/null && break; sleep 0.1; done
  curl -sf "$endpoint/moto-api/" >/dev/null || { echo "moto_server did not start:"; cat "$dir/moto.log"; exit 1; }
  export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_DEFAULT_REGION=us-east-1 AWS_REGION=us-east-1
  unset AWS_PROFILE AWS_SESSION_TOKEN
}

# ami_template FILE ENDPOINT NAME_PATTERN: the one kiln template both
# measure.
ami_template() {
  cat > "$1" <<TOML
[image]
name = "bench-ami"
version = "1.0.0"

[source.ami.bench]
region = "us-east-1"
endpoint = "$2"
from = { owners = ["amazon"], name = "$3", most_recent = true }
instance_type = "t3.micro"
ami_name = "kiln-bench-\${uuid()}"

[[build]]
name = "bench"
sources = ["ami.bench"]
TOML
}
