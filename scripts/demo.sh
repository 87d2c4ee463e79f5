#!/usr/bin/env bash
# Set up (if needed) and run the demo on the bundled sample case. Extra arguments go to 'mmreg demo'.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
py="$("$root/scripts/setup_env.sh")"
exec "$py" -m MMRegistrationLib demo "$@"
