#!/usr/bin/env bash
# Usage: scripts/need-tool.sh COMMAND [DEBIAN_PACKAGE]
# Make sure COMMAND is on PATH, installing DEBIAN_PACKAGE (default: COMMAND) with apt-get when
# it is missing (as root, or through sudo). Exits non-zero with a clear message otherwise.
set -euo pipefail
tool=$1
pkg=${2:-$1}
command -v "$tool" >/dev/null 2>&1 && exit 0
echo "need-tool: '$tool' not found; installing Debian package '$pkg'" >&2
if ! command -v apt-get >/dev/null 2>&1; then
    echo "need-tool: apt-get is not available: install '$pkg' (providing '$tool') yourself" >&2
    exit 1
fi
sudo=()
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        sudo=(sudo)
    else
        echo "need-tool: not root and no sudo: install '$pkg' yourself" >&2
        exit 1
    fi
fi
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get install -y -q "$pkg" >/dev/null 2>&1 ||
    { "${sudo[@]}" apt-get update -q >/dev/null && "${sudo[@]}" apt-get install -y -q "$pkg"; }
command -v "$tool" >/dev/null 2>&1 || { echo "need-tool: '$tool' still missing after installing '$pkg'" >&2; exit 1; }
