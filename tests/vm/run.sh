#!/usr/bin/env bash
# The VM tier alone: builds the cached VM image if missing (outside the scenario's time
# limit), then runs the checks of tests/vm/90-vm.sh through the e2e runner, so the output is
# the suite's: one "ok"/"FAIL" line per check and "e2e: N passed, N failed".
#   tests/vm/run.sh [bookworm|trixie|all]     (default bookworm: Debian 12)
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
case "${1:-bookworm}" in
bookworm | 12) rels=(bookworm) ;;
trixie | 13) rels=(trixie) ;;
all) rels=(bookworm trixie) ;;
-h | --help) sed -n '2,5p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
*) echo "usage: tests/vm/run.sh [bookworm|trixie|all]" >&2; exit 2 ;;
esac
for s in "${rels[@]}"; do bash "$here/image.sh" "$s" >/dev/null; done
# 90-vm.sh runs once per release of its "releases" line; these are the ones asked for.
export SLOT_OS_TEST_RELEASES="${rels[*]}"
# A slot boots in minutes under emulation; on a loaded machine the tier takes longer than
# the runner's default 900 s per scenario.
export SLOT_OS_SCENARIO_TIMEOUT=${SLOT_OS_SCENARIO_TIMEOUT:-2400}
exec bash "$here/../run-e2e.sh" "$here/90-vm.sh"
