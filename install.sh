#!/usr/bin/env bash
# Installs robustsam-restore into a virtual environment (default: ./.venv).
#   bash install.sh            # runtime only
#   bash install.sh test       # plus the test tools
# Order matters: BasicSR 1.4.2 ships only a source archive whose setup.py needs torch at build time,
# so torch goes in first and BasicSR is built without build isolation.
set -euo pipefail
cd "$(dirname "$0")"
VENV=${VENV:-.venv}
PY=${PYTHON:-python3}
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
pip() { "$VENV/bin/python" -m pip "$@"; }
pip install -q --upgrade pip setuptools wheel
pip install -q torch==2.14.1 torchvision==0.29.1
pip install -q --no-build-isolation basicsr==1.4.2
extra=""
[ "${1:-}" = "test" ] && extra="[test]"
pip install -q -e ".${extra}"
echo "installed into $VENV"
