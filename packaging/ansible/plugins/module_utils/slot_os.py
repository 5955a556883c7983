# -*- coding: utf-8 -*-
# Copyright: slot-os contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Shared by the slot-os modules: run ``slot-os`` on the managed host, read its ``--json``
state, and compare wanted values with what slot-os reports.

The modules never edit /etc/slot-os themselves. They read the state with slot-os's own
``--json`` listings and call a slot-os command only for what has to change, so every
change is validated, persisted, applied live and journaled by slot-os as when a person
types it. A refused command fails the task with slot-os's message and exit code
(2: bad input, nothing was changed).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import ipaddress
import json
import re

# Fulcon's K/M/G/T suffixes, powers of 1024 (slot-config's Memory).
_UNITS = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


class SlotOS(object):
    """One module's way to slot-os: read-only queries always run (also in check mode);
    changes are recorded, and run unless in check mode."""

    def __init__(self, module):
        self.module = module
        self.bin = module.get_bin_path("slot-os", required=True)
        self.commands = []

    def _run(self, args):
        cmd = [self.bin] + [str(a) for a in args]
        # LANG=C: messages are matched by nobody, but must not depend on a locale.
        rc, out, err = self.module.run_command(cmd, environ_update={"LANG": "C.UTF-8"})
        return cmd, rc, out, err

    def fail(self, cmd, rc, out, err):
        msg = (err or "").strip() or (out or "").strip() or "slot-os exited with %d" % rc
        self.module.fail_json(
            msg=msg, rc=rc, cmd=" ".join(cmd), stdout=out, stderr=err, commands=self.commands
        )

    def query(self, *args):
        """A ``--json`` listing, parsed."""
        cmd, rc, out, err = self._run(list(args) + ["--json"])
        if rc != 0:
            self.fail(cmd, rc, out, err)
        try:
            return json.loads(out)
        except ValueError as e:
            self.module.fail_json(msg="%s printed no JSON: %s" % (" ".join(cmd), e), stdout=out)

    def change(self, *args, **kw):
        """A command that changes something; only recorded in check mode. A failure ends
        the task, unless ``on_failure`` is given: it is called first (to undo what the task
        did before, such as a stop)."""
        shown = "slot-os " + " ".join(str(a) for a in args)
        self.commands.append(shown)
        if self.module.check_mode:
            return ""
        cmd, rc, out, err = self._run(list(args))
        if rc != 0:
            if kw.get("on_failure"):
                kw["on_failure"]()
            self.fail(cmd, rc, out, err)
        return out

    def slots(self):
        return self.query("list")

    def find_slot(self, name):
        """The ``list --json`` entry of slot ``name`` (a name, or a number), or None."""
        for s in self.slots():
            if s.get("name") == name or (name.isdigit() and s.get("number") == int(name)):
                return s
        return None


def slot_name(name):
    """slot-os's naming: a bare number N is slot ``slotNN``."""
    name = str(name)
    if name.isdigit():
        return "slot%02d" % int(name)
    return name


def norm_cpu_quota(value):
    """'50', '50%' -> '50%'; 'auto' -> 'auto' (as slot-os writes it)."""
    t = str(value).strip()
    if t == "auto":
        return t
    digits = t[:-1].strip() if t.endswith("%") else t
    if not digits.isdigit() or int(digits) == 0:
        raise ValueError("%r is not a CPU quota; use a percentage like '50%%' or 'auto'" % value)
    return "%d%%" % int(digits)


def cpu_set(value):
    """'0-1,3' -> frozenset({0, 1, 3}); 'all' -> 'all'."""
    t = str(value).strip()
    if t == "all":
        return t
    cpus = set()
    for part in t.split(","):
        ends = part.strip().split("-", 1)
        lo, hi = ends[0], ends[-1]
        if not lo.strip().isdigit() or not hi.strip().isdigit() or int(lo) > int(hi):
            raise ValueError("%r is not a CPU set; use numbers and ranges like '0-1,3', or 'all'" % value)
        cpus.update(range(int(lo), int(hi) + 1))
    return frozenset(cpus)


def cpu_set_text(value):
    """The kernel's cpulist form of a CPU set ('0-1,3'), or 'all'."""
    s = cpu_set(value)
    if s == "all":
        return s
    out, run = [], []
    for c in sorted(s):
        if run and c == run[-1] + 1:
            run.append(c)
            continue
        if run:
            out.append(_run_text(run))
        run = [c]
    if run:
        out.append(_run_text(run))
    return ",".join(out)


def _run_text(run):
    return str(run[0]) if len(run) == 1 else "%d-%d" % (run[0], run[-1])


def memory_bytes(value):
    """'512M' -> 536870912 (slot-os's K/M/G/T, powers of 1024; a trailing B is allowed)."""
    t = str(value).strip()
    if t[-1:] in ("b", "B"):
        t = t[:-1]
    m = re.match(r"^\s*([0-9]+)\s*([KMGTkmgt]?)$", t)
    if not m:
        raise ValueError("%r is not a memory size; use a number with K, M, G or T, like '512M'" % value)
    return int(m.group(1)) * _UNITS.get(m.group(2).upper(), 1)


def memory_text(n):
    """Bytes as slot-os writes them: the largest unit that states the size exactly."""
    for u in ("T", "G", "M", "K"):
        if n >= _UNITS[u] and n % _UNITS[u] == 0:
            return "%d%s" % (n // _UNITS[u], u)
    return str(n)


def interface(value):
    """'192.168.18.2/24' as an address with its prefix (canonical text); ValueError if not."""
    try:
        if "/" not in str(value):
            raise ValueError()
        return str(ipaddress.ip_interface(str(value).strip()))
    except ValueError:
        raise ValueError("%r is not an address with a prefix, like '192.168.18.2/24'" % value)
