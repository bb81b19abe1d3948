#!/usr/bin/env bash
# Usage: scripts/docs.sh [extra mkdocs build options]     (run by `make docs`)
#
# Builds the documentation site (mkdocs + material + mkdocstrings) into site/ with --strict:
# any warning fails the build -- a broken link, a page missing from the nav or the nav
# pointing at a missing page, an unresolved cross-reference, a docstring that documents a
# parameter the signature does not have.
# The API reference imports the package to document the C engine from its stub and its
# compiled docstrings (scripts/griffe_engine.py): build the extension first (`make build`).
# Environment: VPY (venv python, default .venv/bin/python), SITE_DIR (default site).
set -euo pipefail
cd "$(dirname "$0")/.."

vpy=${VPY:-.venv/bin/python}
site=${SITE_DIR:-site}

if ! "$vpy" -c "import hother.cancelable._engine" 2>/dev/null; then
    echo "docs: hother.cancelable._engine does not import; run 'make build' first" >&2
    "$vpy" -c "import hother.cancelable._engine" || true
    exit 1
fi

export NO_MKDOCS_2_WARNING=1 # material's banner about its successor
exec "$vpy" -m mkdocs build --strict --clean --site-dir "$site" "$@"
