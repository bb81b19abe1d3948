#!/usr/bin/env bash
# Usage: scripts/ensure-venv.sh PYTHON VENV_DIR STAMP
# Create VENV_DIR with PYTHON when missing, then install the project editable with its [dev]
# extras unless everything pyproject.toml asks for is already installed (checked offline by
# scripts/check_venv.py, so an up-to-date venv never touches the network). Touches STAMP.
set -euo pipefail
py=$1
venv=$2
stamp=$3
vpy=$venv/bin/python
cd "$(dirname "$0")/.."
if [ ! -x "$vpy" ]; then
    echo "ensure-venv: creating $venv with $py" >&2
    "$py" -m venv "$venv"
fi
if ! "$vpy" scripts/check_venv.py; then
    echo "ensure-venv: installing the project and its dev dependencies into $venv" >&2
    "$vpy" -m pip install -q --upgrade pip setuptools wheel
    "$vpy" -m pip install -q -e '.[dev]'
    "$vpy" scripts/check_venv.py
fi
touch "$stamp"
