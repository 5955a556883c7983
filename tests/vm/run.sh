#!/usr/bin/env bash
# The VM tier alone: builds the project (unless SLOT_OS_SKIP_BUILD), the cached VM image if
# missing, boots it and runs the checks of tests/e2e/90-vm.sh (Debian 12) or
# tests/e2e/91-vm-trixie.sh (Debian 13), through the e2e runner, so the output is the suite's:
# one "ok"/"FAIL" line per check and "e2e: N passed, N failed".
#   tests/vm/run.sh [bookworm|trixie|all]
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
case "${1:-bookworm}" in
bookworm | 12) set -- 90-vm ;;
trixie | 13) set -- 91-vm-trixie ;;
all) set -- 90-vm 91-vm-trixie ;;
-h | --help) sed -n '2,6p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
*) echo "usage: tests/vm/run.sh [bookworm|trixie|all]" >&2; exit 2 ;;
esac
bash "$here/install-deps.sh"
exec bash "$here/../run-e2e.sh" "$@"
