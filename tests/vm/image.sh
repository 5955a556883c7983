#!/usr/bin/env bash
# Build (or find) the VM tier's cached image and print its directory (disk.img, vmlinuz,
# initrd.img). Run it before the e2e suite to keep the image build out of the scenario's
# time limit:  tests/vm/image.sh [bookworm|trixie]
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
[[ "$(id -u)" == 0 ]] || { echo "tests/vm/image.sh: must run as root (debootstrap)" >&2; exit 2; }
suite=${1:-bookworm}
case "$suite" in
bookworm | trixie) export SLOT_OS_VM_SUITE=$suite ;;
*) echo "usage: tests/vm/image.sh [bookworm|trixie]" >&2; exit 2 ;;
esac
bash "$here/install-deps.sh"
# shellcheck source=tests/vm/lib.sh
source "$here/lib.sh"
vm_image
