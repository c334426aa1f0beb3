# kiln hardening prelude: put in front of every apply and check script of
# a profile. Plain POSIX sh (busybox has no bash). kiln sets KILN_DISTRO_ID,
# KILN_DISTRO_LIKE and KILN_DISTRO_CODENAME from /etc/os-release.

# Is this a Debian-family system (Debian, Ubuntu, …)?
kiln_is_debian() {
  case " ${KILN_DISTRO_ID:-} ${KILN_DISTRO_LIKE:-} " in
    *" debian "*|*" ubuntu "*) return 0 ;;
  esac
  return 1
}

# Installs packages with the system's package manager.
kiln_pkg_install() {
  if command -v apt-get >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive DEBCONF_NOWARNINGS=yes
    if ! ls /var/lib/apt/lists/*_Packages >/dev/null 2>&1; then
      apt-get update -qq
    fi
    apt-get install -y -qq --no-install-recommends -o Dpkg::Options::=--force-confold "$@" >/dev/null
  elif command -v dnf >/dev/null 2>&1; then
    dnf install -y -q "$@"
  elif command -v yum >/dev/null 2>&1; then
    yum install -y -q "$@"
  else
    echo "no package manager (apt-get, dnf, yum) to install $*" >&2
    return 1
  fi
}

# Is the package installed? Prints what was found either way.
kiln_has_pkg() {
  if command -v dpkg-query >/dev/null 2>&1; then
    if dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; then
      echo "package $1 is installed"; return 0
    fi
  elif command -v rpm >/dev/null 2>&1 && rpm -q "$1" >/dev/null 2>&1; then
    echo "package $1 is installed"; return 0
  fi
  echo "package $1 is not installed"
  return 1
}

# kiln_set_option FILE KEY VALUE: sets `KEY VALUE` in a `KEY VALUE` file
# (login.defs style): active lines for KEY are commented out, one appended.
kiln_set_option() {
  touch "$1"
  sed -i -E "s/^([[:space:]]*$2([[:space:]]|=|\$))/# kiln: \\1/" "$1"
  printf '%s %s\n' "$2" "$3" >>"$1"
}

# kiln_option FILE KEY: the value of the last active `KEY VALUE` line.
kiln_option() {
  [ -f "$1" ] || return 0
  awk -v k="$2" '$1 == k { v = $2 } END { if (v != "") print v }' "$1"
}

# kiln_expect_option FILE KEY OP WANT: compares KEY's value (`-eq`, `-le`,
# `-ge` for numbers, `=` for text) and prints the evidence.
kiln_expect_option() {
  have=$(kiln_option "$1" "$2")
  if [ -n "$have" ] && [ "$have" "$3" "$4" ] 2>/dev/null; then
    echo "$1: $2 $have"; return 0
  fi
  echo "$1: $2 is ${have:-unset} (want $3 $4)"
  return 1
}

# The sshd_config files in the order sshd reads them: drop-ins first when
# the main file includes them at the top (Debian, Ubuntu, RHEL 9, AL2023).
kiln_sshd_files() {
  if grep -Eiq '^[[:space:]]*Include[[:space:]]+/etc/ssh/sshd_config.d/' /etc/ssh/sshd_config 2>/dev/null; then
    for f in /etc/ssh/sshd_config.d/*.conf; do [ -f "$f" ] && echo "$f"; done
  fi
  echo /etc/ssh/sshd_config
}

# kiln_sshd_set KEY VALUE: sets an sshd option in kiln's drop-in, which sshd
# reads first (the first value of an option wins).
kiln_sshd_set() {
  if ! grep -Eiq '^[[:space:]]*Include[[:space:]]+/etc/ssh/sshd_config.d/' /etc/ssh/sshd_config; then
    sed -i '1i Include /etc/ssh/sshd_config.d/*.conf' /etc/ssh/sshd_config
  fi
  mkdir -p /etc/ssh/sshd_config.d
  f=/etc/ssh/sshd_config.d/00-kiln-hardening.conf
  touch "$f"
  chmod 600 "$f"
  grep -vi "^$1 " "$f" >"$f.new" || true
  printf '%s %s\n' "$1" "$2" >>"$f.new"
  mv "$f.new" "$f"
}

# kiln_sshd_expect KEY VALUE: the effective value of an sshd option (the
# first one outside a Match block, as sshd reads them) must be VALUE.
kiln_sshd_expect() {
  # shellcheck disable=SC2046
  have=$(awk -v k="$(echo "$1" | tr 'A-Z' 'a-z')" '
    tolower($1) == "match" { nextfile }
    tolower($1) == k { $1 = ""; sub(/^ +/, ""); print; exit }' $(kiln_sshd_files))
  if [ "$(echo "$have" | tr 'A-Z' 'a-z')" = "$(echo "$2" | tr 'A-Z' 'a-z')" ]; then
    echo "sshd: $1 $have"; return 0
  fi
  echo "sshd: $1 is ${have:-the default} (want $2)"
  return 1
}

# kiln_expect_mode PATH MAX: PATH's permission bits must be within MAX
# (octal) and owned by root.
kiln_expect_mode() {
  [ -e "$1" ] || { echo "$1 does not exist"; return 0; }
  mode=$(stat -c %a "$1"); owner=$(stat -c %u "$1")
  if [ $(( 0$mode & ~0$2 & 07777 )) -eq 0 ] && [ "$owner" = 0 ]; then
    echo "$1: mode $mode owner $owner"; return 0
  fi
  echo "$1: mode $mode owner $owner (want at most $2, owner 0)"
  return 1
}
