#!/usr/bin/env python3
"""The connection of tests/e2e/74-move.sh, between `slot-os move` (this relay's stdin and
stdout) and the command in argv (ssh to the target's `slot-os move-receive`).

It passes the move's frames (a kind byte, a big-endian u32 length, the payload) both ways
and can stop at one of them, so a test kills a process at a known point of the move
without sleeping. /run/relay/hold, read when the relay starts, holds `DIR KIND N`: DIR `up`
(source to target) or `down` (target to source), KIND a frame kind byte (storage::wire),
N which one of them. Before passing that frame on, the relay writes /run/relay/held and
reads the FIFO /run/relay/go: `go` passes it on, `cut` ends the connection there (both
directions at once, as a broken link does).
"""
import ctypes
import os
import signal
import struct
import subprocess
import sys
import threading

RUN = "/run/relay"


def read_exactly(src, n):
    buf = b""
    while len(buf) < n:
        chunk = src.read(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


def main():
    # Dies with slot-os (or the sh that runs us), as a process of a killed helper does: a
    # relay left waiting on a hold would keep the target's receiver from its end of input.
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() == 1:
        os._exit(1)
    hold = None
    try:
        with open(f"{RUN}/hold") as f:
            d, k, n = f.read().split()
            hold = (d, k.encode(), int(n))
    except FileNotFoundError:
        pass
    child = subprocess.Popen(sys.argv[1:], stdin=subprocess.PIPE, stdout=subprocess.PIPE)

    def pump(name, src, dst):
        seen = 0
        while True:
            head = read_exactly(src, 5)
            if head is None:
                break
            body = read_exactly(src, struct.unpack(">I", head[1:])[0])
            if body is None:
                break
            if hold and hold[0] == name and head[:1] == hold[1]:
                seen += 1
                if seen == hold[2]:
                    with open(f"{RUN}/held", "w") as f:
                        f.write(f"{name} {hold[1].decode()} {seen}\n")
                    with open(f"{RUN}/go") as f:
                        word = f.read().strip()
                    if word == "cut":
                        os._exit(3)
            try:
                dst.write(head + body)
                dst.flush()
            except BrokenPipeError:
                break
        try:
            dst.close()
        except BrokenPipeError:
            pass

    up = threading.Thread(target=pump, args=("up", sys.stdin.buffer, child.stdin), daemon=True)
    down = threading.Thread(target=pump, args=("down", child.stdout, sys.stdout.buffer), daemon=True)
    up.start()
    down.start()
    up.join()
    child.wait()
    down.join(timeout=5)
    os._exit(child.returncode or 0)


if __name__ == "__main__":
    main()
