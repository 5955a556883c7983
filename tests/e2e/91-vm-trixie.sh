# The VM tier's checks (tests/e2e/90-vm.sh) on Debian 13 "trixie" (kernel 6.12, systemd 257).
SLOT_OS_VM_SUITE=trixie
# shellcheck source=90-vm.sh
source "$TH_REPO/tests/e2e/90-vm.sh"
