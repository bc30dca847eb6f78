#!/usr/bin/env bash
# Creates .venv in the repository root and installs kubeloop, its plugins and dev tools.
# torch goes first and pinned: any other spec would pull a multi-GB CUDA build here.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-$(command -v python3.11 || command -v python3)}
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
pip=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)
"${pip[@]}" --upgrade pip
"${pip[@]}" torch==2.13.0
editables=(-e '.[dev]')
for plugin in plugins/*/pyproject.toml; do
  [ -e "$plugin" ] && editables+=(-e "$(dirname "$plugin")")
done
"${pip[@]}" -c constraints.txt "${editables[@]}"
echo "kubeloop installed in .venv ($(.venv/bin/kubeloop --version))"
