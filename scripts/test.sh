#!/usr/bin/env bash
# Set up (if needed) and run the whole test suite. Extra arguments go to pytest (e.g. -m "not slow").
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
py="$("$root/scripts/setup_env.sh")"
cd "$root"
exec "$py" -m pytest "$@"
