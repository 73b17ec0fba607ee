#!/usr/bin/env bash
# Install what the peer servers need; safe to run again (does only what is missing).
#
#   loadtest/peers/install.sh [PEER...]     PEER: bun | node-ws | go-hub | hubcast (default: all peers)
#
# - bun, node-ws: `npm install` into loadtest/peers/node_modules (versions pinned in
#   package.json / package-lock.json). Bun comes from the npm package @oven/bun-linux-x64;
#   on a CPU without AVX2 the -baseline build of the same version is used instead.
#   .bin/bun links to the variant that runs here.
# - go-hub: Debian's golang-go and golang-github-gorilla-websocket-dev (apt), then
#   `go build` into loadtest/peers/.bin/go-hub, offline (GOPROXY=off).
# - jq (used by ../compare.sh) from apt if missing.
# hubcast itself is built by run.sh / compare.sh (cargo), not here.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
BIN="$HERE/.bin"
GORILLA_DIR=/usr/share/gocode/src/github.com/gorilla/websocket

log() { printf 'install.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"
  elif command -v sudo >/dev/null; then sudo "$@"
  else die "need root for: $*"; fi
}

APT_UPDATED=0
apt_install() {
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "apt-get install ${missing[*]}"
  if [ "$APT_UPDATED" -eq 0 ]; then
    as_root apt-get update -qq
    APT_UPDATED=1
  fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

# Version pinned in package.json for a dependency.
pinned() { node -p "require('$HERE/package.json').dependencies['$1']"; }
# Version installed in node_modules, or empty.
installed() { node -p "try { require('$HERE/node_modules/$1/package.json').version } catch { '' }"; }

install_npm() {
  if ! command -v node >/dev/null || ! command -v npm >/dev/null; then die "node and npm are required (Node 20+)"; fi
  local want_ws want_bun
  want_ws="$(pinned ws)"
  want_bun="$(pinned @oven/bun-linux-x64)"
  if [ "$(installed ws)" != "$want_ws" ] || [ "$(installed @oven/bun-linux-x64)" != "$want_bun" ]; then
    log "npm install (ws $want_ws, bun $want_bun)"
    (cd "$HERE" && npm install --no-audit --no-fund --loglevel=error)
  fi
  [ "$(installed ws)" = "$want_ws" ] || die "ws $want_ws did not install"
}

install_bun() {
  install_npm
  local version bun
  version="$(pinned @oven/bun-linux-x64)"
  mkdir -p "$BIN"
  for variant in bun-linux-x64 bun-linux-x64-baseline; do
    bun="$HERE/node_modules/@oven/$variant/bin/bun"
    if [ ! -x "$bun" ] && [ "$variant" = bun-linux-x64-baseline ]; then
      # The default build needs AVX2; fetch the baseline build of the same version.
      log "bun-linux-x64 does not run here; installing @oven/$variant@$version"
      (cd "$HERE" && npm install --no-save --no-audit --no-fund --loglevel=error "@oven/$variant@$version")
    fi
    if [ -x "$bun" ] && [ "$("$bun" --version 2>/dev/null)" = "$version" ]; then
      ln -sfn "$bun" "$BIN/bun"
      log "bun $version ($variant) ready: .bin/bun"
      return 0
    fi
  done
  die "no Bun $version build runs on this machine"
}

install_node_ws() {
  install_npm
  log "node $(node --version), ws $(installed ws) ready"
}

install_go_hub() {
  command -v go >/dev/null || apt_install golang-go
  [ -f "$GORILLA_DIR/conn.go" ] || apt_install golang-github-gorilla-websocket-dev
  mkdir -p "$BIN"
  # go.mod replaces gorilla/websocket with Debian's copy: no module download at all.
  (cd "$HERE/go-hub" && GOPROXY=off GOFLAGS=-mod=mod go build -o "$BIN/go-hub" .)
  log "$(go version | cut -d' ' -f3), gorilla/websocket $(dpkg-query -W -f='${Version}' golang-github-gorilla-websocket-dev) ready: .bin/go-hub"
}

main() {
  local peers=("$@")
  [ ${#peers[@]} -gt 0 ] || peers=(bun node-ws go-hub)
  command -v jq >/dev/null || apt_install jq
  for p in "${peers[@]}"; do
    case "$p" in
      bun) install_bun ;;
      node-ws) install_node_ws ;;
      go-hub) install_go_hub ;;
      hubcast) ;; # built with cargo by run.sh / compare.sh
      *) die "unknown peer '$p' (bun | node-ws | go-hub | hubcast)" ;;
    esac
  done
}

main "$@"
