#!/usr/bin/env bash
# Idempotent setup of the project-local virtual environment (.venv) with pinned dependencies.
# Prints the path of the environment's python on stdout. Re-runs only when requirements/pinned.txt or
# pyproject.toml changed (a stamp file records their checksum).
# MMREG_PYTHON=/path/to/python uses an existing interpreter instead (e.g. Slicer's, which keeps its torch).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ -n "${MMREG_PYTHON:-}" ]]; then
  "$MMREG_PYTHON" -c "import torch, SimpleITK" >/dev/null 2>&1 || {
    echo "MMREG_PYTHON=$MMREG_PYTHON lacks torch or SimpleITK; install them there first" >&2; exit 1; }
  "$MMREG_PYTHON" -m pip install -q --no-deps -e "$root" >&2
  echo "$MMREG_PYTHON"; exit 0
fi
venv="$root/.venv"
py="$venv/bin/python"
stamp="$venv/.mmreg-setup-stamp"
want="$(cat "$root/requirements/pinned.txt" "$root/pyproject.toml" | sha256sum | cut -d' ' -f1)"
if [[ -x "$py" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
  echo "$py"; exit 0
fi
base_python="${PYTHON:-python3}"
echo "setting up $venv (one time; later runs reuse it)..." >&2
[[ -x "$py" ]] || "$base_python" -m venv "$venv" >&2
"$py" -m pip install -q --upgrade pip >&2 2>/dev/null || true
"$py" -m pip install -q -r "$root/requirements/pinned.txt" >&2
"$py" -m pip install -q --no-deps -e "$root" >&2
"$py" -c "import torch, SimpleITK, MMRegistrationLib" >&2
echo "$want" > "$stamp"
echo "$py"
