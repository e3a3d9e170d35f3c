#!/usr/bin/env bash
# The container images, built from the Dockerfile without Docker or a registry: buildah (daemonless,
# from Debian's packages) on a Debian bookworm base that mmdebstrap makes here. Nothing is pulled.
#
#   hack/images.sh build      build what is missing and export it (prints each phase's time)
#   hack/images.sh tag        print the tag: a hash of the build's inputs (same sources, same tag)
#   hack/images.sh names      print the image names, one a line: runtime, operator, pause
#   hack/images.sh archives   print the archive paths, one a line, in the same order
#
# Images: localhost/litgpt-runtime:<tag> and localhost/litgpt-operator:<tag> (the Dockerfile's
# `runtime` and `operator` targets) and localhost/pause:<tag of hack/pause/> (the pod sandbox: a
# static binary in a scratch image), in buildah's storage and exported as docker archives to
# ${LITGPT_CACHE:-~/.cache/litgpt-operator}/images/<name>-<tag>.tar, ready for
# `ctr -n k8s.io images import`. Needs root, buildah, runc, mmdebstrap and gcc (Debian: apt-get
# install buildah runc mmdebstrap gcc libc6-dev).
#
# Package index settings and trust store: pip inside the build reads this machine's settings
# (/etc/pip.conf, ~/.config/pip/pip.conf, PIP_* variables, merged into one file) and its CA
# bundle, mounted as build secrets into the steps that install from the index (see the
# Dockerfile): they never enter an image.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cache=${LITGPT_CACHE:-$HOME/.cache/litgpt-operator}
archives_dir=$cache/images
# Debian bookworm's Python; the base image below is made from bookworm's packages.
python_version=3.11
suite=bookworm
base_packages=python3,python3-venv,python-is-python3,ca-certificates
mirror=http://deb.debian.org/debian
security=http://deb.debian.org/debian-security
keep_archives=2  # per image: the newest ones (another checkout may be using the previous tag)

hash_of() { sha256sum | cut -c1-12; }

# Everything the build reads: the Dockerfile, what it COPYs (as .dockerignore lets it through),
# the build arguments and the base recipe. The same inputs give the same tag, so an unchanged
# checkout reuses its images and archives.
tag() {
  (
    cd "$repo"
    printf '%s\n' "$python_version" "$suite" "$base_packages"
    find Dockerfile .dockerignore pyproject.toml README.md runtime operator -type f \
      -not -path '*/__pycache__/*' -not -name '*.pyc' -not -path '*.egg-info/*' -print0 \
      | LC_ALL=C sort -z | xargs -0 sha256sum
  ) | hash_of
}
pause_tag() { cat "$repo/hack/pause/pause.c" | hash_of; }
base_name() { printf '%s\n' "$suite" "$base_packages" | hash_of | sed "s|^|localhost/litgpt-base:$suite-py$python_version-|"; }
names() {
  local t
  t=$(tag)
  echo "localhost/litgpt-runtime:$t"
  echo "localhost/litgpt-operator:$t"
  echo "localhost/pause:$(pause_tag)"
}
archive_of() { local ref=${1#localhost/}; echo "$archives_dir/${ref%%:*}-${ref##*:}.tar"; }
archives() { local ref; names | while read -r ref; do archive_of "$ref"; done; }

have_image() { buildah inspect --type image "$1" >/dev/null 2>&1; }

phase_start=0
phase() { phase_start=$SECONDS; echo "==> $*" >&2; }
phase_done() { echo "    done in $((SECONDS - phase_start))s" >&2; }

need() {
  local missing=() tool
  for tool in "$@"; do command -v "$tool" >/dev/null || missing+=("$tool"); done
  if ((${#missing[@]})); then
    echo "error: hack/images.sh needs ${missing[*]} (Debian: apt-get install -y buildah runc mmdebstrap gcc libc6-dev)" >&2
    exit 1
  fi
  if [[ $(id -u) != 0 ]]; then
    echo "error: hack/images.sh build runs as root (buildah's storage and mmdebstrap's chroot need it)" >&2
    exit 1
  fi
}

# The python:<version>-slim equivalent: Debian's minimal system plus Python, venv and the CA
# certificates, written by mmdebstrap straight into an empty buildah container and committed.
build_base() {
  local name=$1 ctr mnt
  ctr=$(buildah from scratch)
  mnt=$(buildah mount "$ctr")
  # Documentation and man pages are dropped as in the slim images (copyright files stay).
  if ! mmdebstrap --quiet --variant=minbase --include="$base_packages" \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' --dpkgopt='path-exclude=/usr/share/locale/*' \
    "$suite" "$mnt" "deb $mirror $suite main" "deb $mirror $suite-updates main" \
    "deb $security $suite-security main"; then
    buildah rm "$ctr" >/dev/null
    return 1
  fi
  buildah unmount "$ctr" >/dev/null
  buildah config --env LANG=C.UTF-8 \
    --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin --cmd python3 "$ctr"
  buildah commit --quiet --rm "$ctr" "$name" >/dev/null
}

# The pod sandbox image: one static binary, nothing else.
build_pause() {
  local name=$1 dir ctr
  dir=$(mktemp -d)
  gcc -static -Os -Wall -Wextra -Werror -o "$dir/pause" "$repo/hack/pause/pause.c"
  strip "$dir/pause"
  ctr=$(buildah from scratch)
  buildah copy --chmod 0755 "$ctr" "$dir/pause" /pause >/dev/null
  buildah config --entrypoint '["/pause"]' --cmd '' --user 65535:65535 "$ctr"
  buildah commit --quiet --rm "$ctr" "$name" >/dev/null
  rm -rf "$dir"
}

# pip's settings as pip itself would read them on this machine (config files, then PIP_*
# variables on top), in one file that the build mounts as its /etc/pip.conf. The CA bundle they
# name (or the system's) is mounted where the Dockerfile puts it, and `cert` points there.
# A local find-links folder cannot be a secret (secrets are files): one holding packages is
# bind-mounted at its own path (which leaves an empty folder of that name in the image); an
# empty or missing one is dropped.
pip_settings() {
  python3 - "$1" "$2" <<'EOF_PY'
import configparser, os, sys
settings_out, ca_out = sys.argv[1:]
files = ["/etc/xdg/pip/pip.conf", "/etc/pip.conf", os.path.expanduser("~/.pip/pip.conf"),
         os.path.expanduser("~/.config/pip/pip.conf"), os.environ.get("PIP_CONFIG_FILE", "")]
config = configparser.RawConfigParser()
config.read([f for f in files if f and os.path.isfile(f)])
if not config.has_section("global"):
    config.add_section("global")
for key, value in os.environ.items():
    if key.startswith("PIP_") and key != "PIP_CONFIG_FILE":
        config.set("global", key[4:].lower().replace("_", "-"), value)
build_bundle = "/etc/pip-ca-certificates.crt"  # the secret's target in the Dockerfile
ca = config.get("global", "cert", fallback="/etc/ssl/certs/ca-certificates.crt")
ca = os.path.realpath(ca) if os.path.isfile(ca) else ""
for section in config.sections():
    config.remove_option(section, "cert")
if ca:
    config.set("global", "cert", build_bundle)
    if config.has_option(section, "find-links"):
        kept = []
        for link in config.get(section, "find-links").split():
            path = link.removeprefix("file://")
            if "://" in link and not link.startswith("file://"):
                kept.append(link)
            elif os.path.isdir(path) and os.listdir(path):
                kept.append(link)
                print(f"--volume={path}:{path}:ro")
        if kept:
            config.set(section, "find-links", " ".join(kept))
        else:
            config.remove_option(section, "find-links")
with open(settings_out, "w") as out:
    config.write(out)
with open(ca_out, "w") as out:
    out.write(ca)
EOF_PY
}

build_target() {
  local target=$1 name=$2 base=$3 settings=$4 ca=$5
  shift 5
  # --layers: reuse each step's layer while its inputs are unchanged (torch is built once).
  # --network host: pip reaches the package index as this machine does (no bridge, no NAT).
  # --runtime runc: buildah's default, crun, refuses hosts with cgroup v1 and v2 mounted side
  # by side (this machine's layout); runc runs there.
  local -a secrets=(--secret "id=pip.conf,src=$settings")
  [[ -n $ca ]] && secrets+=(--secret "id=ca-certificates.crt,src=$ca")
  buildah build --layers --pull=never --network host --runtime runc --target "$target" \
    --build-arg "PYTHON_VERSION=$python_version" --build-arg "BASE_IMAGE=$base" \
    "${secrets[@]}" "$@" --tag "$name" --file "$repo/Dockerfile" "$repo"
}

# An uncompressed docker archive (what `ctr images import` and `docker load` read), written
# under a temporary name so a partial archive never looks done.
export_archive() {
  local name=$1 path
  path=$(archive_of "$name")
  [[ -s $path ]] && return 0
  mkdir -p "$archives_dir"
  rm -f "$path.partial"
  buildah push --quiet "$name" "docker-archive:$path.partial:$name" >/dev/null
  mv "$path.partial" "$path"
  # Older archives of the same image: keep a few, drop the rest.
  local stem=${path%-*}
  find "$archives_dir" -maxdepth 1 -name "$(basename "$stem")-*.tar" -printf '%T@ %p\n' \
    | sort -rn | tail -n +$((keep_archives + 1)) | cut -d' ' -f2- | xargs -r rm -f
}

build() {
  need buildah runc mmdebstrap gcc strip python3
  local start base runtime operator pause settings
  # One build at a time on this machine (buildah's storage is shared by every checkout).
  mkdir -p "$archives_dir"
  exec 9>"$archives_dir/.build.lock"
  if ! flock -n 9; then
    echo "another hack/images.sh build is running; waiting for it" >&2
    flock 9
  fi
  start=$SECONDS
  base=$(base_name)
  { read -r runtime; read -r operator; read -r pause; } < <(names)
  echo "tag $(tag); archives in $archives_dir" >&2
  if have_image "$base"; then
    echo "==> base $base: already built" >&2
  else
    phase "base $base (mmdebstrap: Debian $suite + $base_packages)"
    build_base "$base"
    phase_done
  fi
  if have_image "$pause"; then
    echo "==> $pause: already built" >&2
  else
    phase "$pause (gcc -static, scratch image)"
    build_pause "$pause"
    phase_done
  fi
  settings=$(mktemp -d)
  trap 'rm -rf "$settings"' RETURN
  local -a volumes
  mapfile -t volumes < <(pip_settings "$settings/pip.conf" "$settings/ca")
  for target in runtime operator; do
    local name=$runtime
    [[ $target == operator ]] && name=$operator
    if have_image "$name"; then
      echo "==> $name: already built" >&2
    else
      phase "$name (Dockerfile target $target)"
      build_target "$target" "$name" "$base" "$settings/pip.conf" "$(cat "$settings/ca")" "${volumes[@]}"
      phase_done
    fi
  done
  phase "archives"
  for name in "$runtime" "$operator" "$pause"; do export_archive "$name"; done
  phase_done
  for name in "$runtime" "$operator" "$pause"; do
    printf '%s  %s  %s\n' "$name" "$(buildah images --format '{{.Size}}' "$name" | head -1)" "$(archive_of "$name")" >&2
  done
  echo "images built in $((SECONDS - start))s" >&2
}

case ${1:-} in
  build) build ;;
  tag) tag ;;
  names) names ;;
  archives) archives ;;
  *) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
