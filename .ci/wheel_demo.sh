#!/usr/bin/env bash
# A user's install: `pip install .` (not editable) into a fresh venv outside the checkout,
# then `ffjax demo --quick` from another folder. Proves the wheel carries everything the
# demo needs (configs, splits, kernel sources, the builder) without a source checkout.
set -euo pipefail
src="$(cd "$(dirname "$0")/.." && pwd)"
PYTHON="${PYTHON:-$(command -v python3.11 || command -v python3)}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
"$PYTHON" -m venv "$work/venv"
"$work/venv/bin/python" -m pip install -q --upgrade pip
"$work/venv/bin/python" -m pip install -q "$src"
mkdir "$work/elsewhere"
cd "$work/elsewhere"
# Nothing from the checkout may be imported: the installed package is what runs.
"$work/venv/bin/python" -c "import ffjax, sys; assert '$src' not in ffjax.__file__, ffjax.__file__; print('ffjax from', ffjax.__file__)"
"$work/venv/bin/ffjax" demo --quick --output_dir "$work/demo"
test -s "$work/demo/demo_summary.json"
echo "wheel demo: ok"
