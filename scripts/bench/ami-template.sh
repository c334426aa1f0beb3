# Sourced by ami-vs-packer.sh and ami-timeline.sh: the one kiln template
# both measure. ami_template FILE ENDPOINT NAME_PATTERN writes it.
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
