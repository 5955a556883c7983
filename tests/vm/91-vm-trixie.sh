# shellcheck shell=bash
# The VM tier's checks (tests/vm/90-vm.sh) on Debian 13 "trixie" (kernel 6.12, systemd 257).
# Not in tests/e2e/ (the default suite): run it with tests/vm/run.sh trixie.
SLOT_OS_VM_SUITE=trixie
# shellcheck source=tests/vm/90-vm.sh
source "$TH_REPO/tests/vm/90-vm.sh"
