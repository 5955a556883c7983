#!/usr/bin/env bash
# The VM tier alone: builds the cached VM image if missing (outside the scenario's time
# limit), then runs the checks of tests/vm/90-vm.sh (Debian 12) or tests/vm/91-vm-trixie.sh
# (Debian 13) through the e2e runner, so the output is the suite's: one "ok"/"FAIL" line per
# check and "e2e: N passed, N failed".
#   tests/vm/run.sh [bookworm|trixie|all]
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
case "${1:-bookworm}" in
bookworm | 12) suites=(bookworm) scenarios=("$here/90-vm.sh") ;;
trixie | 13) suites=(trixie) scenarios=("$here/91-vm-trixie.sh") ;;
all) suites=(bookworm trixie) scenarios=("$here/90-vm.sh" "$here/91-vm-trixie.sh") ;;
-h | --help) sed -n '2,6p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
*) echo "usage: tests/vm/run.sh [bookworm|trixie|all]" >&2; exit 2 ;;
esac
for s in "${suites[@]}"; do bash "$here/image.sh" "$s" >/dev/null; done
# A slot boots in ~2 min under emulation; on a loaded machine the whole tier takes longer
# than the runner's default 900 s.
export SLOT_OS_SCENARIO_TIMEOUT=${SLOT_OS_SCENARIO_TIMEOUT:-2400}
exec bash "$here/../run-e2e.sh" "${scenarios[@]}"
