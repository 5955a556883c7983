#!/bin/bash
# Runs inside the VM (slot-os-vm-runner.service). Mounts the host's 9p share (mount tag host0)
# and runs the jobs the host drops into it, one at a time, in name order:
#   jobs/NAME.sh        written by the host (renamed into place, so never seen half-written)
#   jobs/NAME.timeout   optional: seconds (default 300)
#   running/NAME.sh     the job is moved here before it runs: a job that reboots the VM is not
#                       run again after the boot
#   results/NAME.out    its stdout+stderr; results/NAME.rc its exit code (written last)
#   ready               "BOOT_ID STATE" once the boot has finished (rewritten at every boot)
set -u
share=/run/slot-os-vm
mkdir -p "$share"
modprobe -a 9pnet_virtio 9p 2>/dev/null
mountpoint -q "$share" ||
    mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 host0 "$share" || exit 1
mkdir -p "$share/jobs" "$share/running" "$share/results"
state=$(systemctl is-system-running --wait 2>/dev/null)
printf '%s %s\n' "$(cat /proc/sys/kernel/random/boot_id)" "$state" >"$share/ready.tmp"
mv -f "$share/ready.tmp" "$share/ready"
while :; do
    ran=
    for job in "$share"/jobs/*.sh; do
        [[ -f "$job" ]] || continue
        name=$(basename "$job" .sh)
        t=300
        [[ -f "$share/jobs/$name.timeout" ]] && t=$(cat "$share/jobs/$name.timeout")
        mv -f "$job" "$share/running/$name.sh" || continue
        timeout -k 10 "$t" bash "$share/running/$name.sh" >"$share/results/$name.out" 2>&1 </dev/null
        printf '%s\n' "$?" >"$share/results/$name.rc.tmp"
        mv -f "$share/results/$name.rc.tmp" "$share/results/$name.rc"
        ran=1
        break # re-list: jobs run in name order
    done
    # 9p sends the guest no change notifications: poll (cheap, a directory listing).
    [[ -n "$ran" ]] || sleep 0.2
done
