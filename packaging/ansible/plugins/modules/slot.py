#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: slot-os contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: slot
short_description: A slot of a slot-os host (created, started, stopped, frozen or removed)
version_added: "0.1.0"
description:
  - Makes one slot of a slot-os host what the task says, by calling the C(slot-os) command on
    the host. It never edits C(/etc/slot-os) itself. The current state is read with
    C(slot-os list --json). A command runs only for what has to change, so a second run
    reports no change.
  - A missing slot is made with C(slot-os create) (its config file and its own clone of the
    base image, with its own machine-id and host name). Resources are set with
    C(slot-os resource), autostart with C(slot-os autostart), NICs with C(slot-os net-add)
    and C(slot-os net-del), and the run state with C(slot-os start), C(stop), C(suspend)
    and C(resume). slot-os applies them live and persists them.
  - Options that are left out are left alone. Resources are compared with the settings that
    slot-os reports for the slot, so a value the slot already follows from C([defaults]) is
    not written again.
  - In check mode nothing is changed. The task still reports whether it would change
    something, and C(commands) lists the slot-os commands it would run.
author: slot-os contributors (@slot-os)
options:
  name:
    description:
      - The slot's name (C(web), C(slot03)), or a number N for slot C(slotNN).
    type: str
    required: true
    aliases: [slot]
  state:
    description:
      - C(present) the slot exists (its config and its image).
      - C(started) it exists and runs (a frozen slot is resumed).
      - C(stopped) it exists and is stopped.
      - C(frozen) it exists, runs and is frozen (C(slot-os suspend); needs a cgroup-v2 host).
      - C(absent) it is stopped, and its config and image are removed (C(slot-os remove)).
        Its backups are kept.
    type: str
    choices: [present, started, stopped, frozen, absent]
    default: present
  number:
    description:
      - The slot's number, for a new slot whose name is not C(slotNN). An existing slot is
        never renumbered; a different number fails the task.
    type: int
  image:
    description:
      - The base image a new slot is cloned from (default C([defaults] image)). Only used
        when the slot is created.
    type: str
  cpu_quota:
    description:
      - CPU share in percent (C(100) is one whole CPU), as C(50), C(50%) or C(auto).
    type: str
  cpus:
    description:
      - CPU set, like C(0-1,3), or C(all).
    type: str
  memory:
    description:
      - Memory limit with K, M, G or T, like C(512M).
    type: str
  autostart:
    description:
      - Whether the slot starts when the host boots.
    type: bool
  nics:
    description:
      - The slot's extra NICs (C(ethN) inside the slot), each with one static address on a
        bridge. When given, this is the whole list. A NIC whose address or bridge differs is
        replaced in place (C(slot-os net-add --replace)), and NICs not listed are removed
        (C(slot-os net-del)), after the others.
    type: list
    elements: dict
    suboptions:
      number:
        description: NIC number N (C(ethN) in the slot), 1 to 99.
        type: int
        required: true
      address:
        description: Address with prefix length, like C(192.168.18.2/24).
        type: str
        required: true
      bridge:
        description:
          - Bridge number. If left out, slot-os picks the bridge whose subnet holds the address.
        type: int
extends_documentation_fragment:
  - slot_os.slot_os.slot_os
seealso:
  - module: slot_os.slot_os.bridge
  - module: slot_os.slot_os.backup
"""

EXAMPLES = r"""
- name: A slot with resources, a NIC on bridge 1, started at boot and now
  slot_os.slot_os.slot:
    name: web
    number: 10
    state: started
    cpu_quota: 50%
    cpus: "0"
    memory: 256M
    autostart: true
    nics:
      - {number: 1, bridge: 1, address: 192.168.18.10/24}

- name: Slot 3 exists (slot03, cloned from the base image), not started
  slot_os.slot_os.slot:
    name: 3

- name: Freeze a slot
  slot_os.slot_os.slot:
    name: web
    state: frozen

- name: Remove a slot (its backups stay)
  slot_os.slot_os.slot:
    name: web
    state: absent
"""

RETURN = r"""
slot:
  description: The slot as C(slot-os list --json) shows it after the task (empty if absent).
  returned: always
  type: dict
  sample: {"name": "web", "number": 10, "state": "RUNNING", "addresses": ["192.168.18.10"]}
commands:
  description: The slot-os commands the task ran (in check mode, would run).
  returned: always
  type: list
  elements: str
  sample: ["slot-os create web --number 10", "slot-os start web"]
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.slot_os.slot_os.plugins.module_utils.slot_os import (
    SlotOS,
    cpu_set,
    cpu_set_text,
    interface,
    memory_bytes,
    memory_text,
    norm_cpu_quota,
    slot_name,
)

UP = ("RUNNING", "SUSPENDED", "STARTING")
DOWN = ("STOPPED", "FAILED")


def view(s, p):
    """What the module manages of slot ``s`` (None: no slot), for the diff."""
    if s is None:
        return {"exists": False}
    v = {"exists": True, "state": s["state"]}
    if p["cpu_quota"] is not None:
        v["cpu_quota"] = s["cpu_quota_setting"]
    if p["cpus"] is not None:
        v["cpus"] = s["cpus_setting"]
    if p["memory"] is not None:
        v["memory"] = s["memory_text"]
    if p["autostart"] is not None:
        v["autostart"] = s["autostart"]
    if p["nics"] is not None:
        v["nics"] = [
            {"number": n["number"], "bridge": n["bridge"], "address": ",".join(interface(a) for a in n["addresses"])}
            for n in s["nics"]
        ]
    return v


def wanted(p):
    """The module's options in slot-os's own forms, and the options that have no such form
    (option name, why, the NIC entry)."""
    w, bad = {}, []
    for opt, norm in (("cpu_quota", norm_cpu_quota), ("cpus", cpu_set), ("memory", memory_bytes)):
        if p[opt] is not None:
            try:
                w[opt] = norm(p[opt])
            except ValueError as e:
                bad.append((opt, str(e), None))
    if p["nics"] is not None:
        w["nics"] = {}
        for n in p["nics"]:
            try:
                if n["number"] in w["nics"]:
                    raise ValueError("NIC %d is listed twice" % n["number"])
                w["nics"][n["number"]] = (n["bridge"], interface(n["address"]))
            except ValueError as e:
                bad.append(("nics", str(e), n))
    return w, bad


def refuse(module, sos, s, name, bad):
    """A value the module cannot read: slot-os is asked to apply it, alone, so that the task
    fails with slot-os's own message and nothing else has changed. Without a slot to ask
    about (or in check mode), the module's own message."""
    opt, why, nic = bad[0]
    if s is None or module.check_mode:
        module.fail_json(msg="%s: %s; nothing was changed" % (opt, why))
    if nic is not None:
        sos.change("net-add", name, nic["address"], nic["number"], "--replace")
    else:
        flag = {"cpu_quota": "-c", "cpus": "-n", "memory": "-m"}[opt]
        sos.change("resource", flag, module.params[opt], name)
    # slot-os took what the module could not read: report it, and manage nothing more.
    module.exit_json(changed=True, slot=sos.find_slot(name) or {}, commands=sos.commands,
                     warnings=["%s: slot-os accepted a value the module cannot compare (%s)" % (opt, why)])


def nic_changes(s, w):
    """(NICs to add or replace: (number, (bridge, address), replace), NIC numbers to
    delete) that make the slot's NICs ``w['nics']``."""
    have = {}
    for n in s["nics"] if s else []:
        have[n["number"]] = (n["bridge"], [interface(a) for a in n["addresses"]])
    sets = []
    for num, want in sorted(w["nics"].items()):
        cur = have.get(num)
        if cur is None:
            sets.append((num, want, False))
        elif cur[1] != [want[1]] or (want[0] is not None and want[0] != cur[0]):
            sets.append((num, want, True))
    dels = [num for num in sorted(have) if num not in w["nics"]]
    return sets, dels


def after_view(before, p, w, nics_after):
    """The diff's after side: the wanted values over what was there."""
    a = dict(before)
    a["exists"] = p["state"] != "absent"
    if not a["exists"]:
        return {"exists": False}
    state = before.get("state", "STOPPED")
    a["state"] = {
        "started": "RUNNING",
        "stopped": "STOPPED" if state not in DOWN else state,
        "frozen": "SUSPENDED",
    }.get(p["state"], state)
    if "cpu_quota" in w:
        a["cpu_quota"] = w["cpu_quota"]
    if "cpus" in w:
        a["cpus"] = cpu_set_text(p["cpus"])
    if "memory" in w:
        a["memory"] = memory_text(w["memory"])
    if p["autostart"] is not None:
        a["autostart"] = p["autostart"]
    if nics_after is not None:
        a["nics"] = nics_after
    return a


def main():
    module = AnsibleModule(
        argument_spec=dict(
            name=dict(type="str", required=True, aliases=["slot"]),
            state=dict(
                type="str",
                default="present",
                choices=["present", "started", "stopped", "frozen", "absent"],
            ),
            number=dict(type="int"),
            image=dict(type="str"),
            cpu_quota=dict(type="str"),
            cpus=dict(type="str"),
            memory=dict(type="str"),
            autostart=dict(type="bool"),
            nics=dict(
                type="list",
                elements="dict",
                options=dict(
                    number=dict(type="int", required=True),
                    address=dict(type="str", required=True),
                    bridge=dict(type="int"),
                ),
            ),
        ),
        supports_check_mode=True,
    )
    p = module.params
    sos = SlotOS(module)
    name = slot_name(p["name"])
    s = sos.find_slot(name)
    before = view(s, p)

    if p["state"] == "absent":
        if s is not None:
            sos.change("remove", name)
        module.exit_json(
            changed=bool(sos.commands),
            slot={},
            commands=sos.commands,
            diff=dict(before=before, after={"exists": False}, before_header=name, after_header=name),
        )

    if s is not None and p["number"] is not None and s["number"] != p["number"]:
        module.fail_json(
            msg="%s has number %s; the slot module does not renumber slots" % (name, s["number"]),
            slot=s,
        )
    w, bad = wanted(p)
    if bad:
        refuse(module, sos, s, name, bad)
    if s is None or not s["image_exists"]:
        args = ["create", name]
        if p["number"] is not None:
            args += ["--number", p["number"]]
        if p["image"] is not None:
            args += ["--image", p["image"]]
        sos.change(*args)
        if not module.check_mode:
            s = sos.find_slot(name)
        if s is None and not module.check_mode:
            module.fail_json(msg="slot-os create %s succeeded, but the slot is not listed" % name)

    res = []
    if "cpu_quota" in w and (s is None or w["cpu_quota"] != s["cpu_quota_setting"]):
        res += ["-c", w["cpu_quota"]]
    if "cpus" in w and (s is None or w["cpus"] != cpu_set(s["cpus_setting"])):
        res += ["-n", cpu_set_text(p["cpus"])]
    if "memory" in w and (s is None or w["memory"] != s["memory"]):
        res += ["-m", memory_text(w["memory"])]
    if res:
        sos.change("resource", *(res + [name]))

    if p["autostart"] is not None and (s is None or s["autostart"] != p["autostart"]):
        sos.change("autostart", "on" if p["autostart"] else "off", name)

    nics_after = None
    if p["nics"] is not None:
        # Added or replaced first (each one validated by slot-os with the whole config, and
        # refused as a whole), removed last: a refused NIC leaves the slot's NICs as they were.
        sets, dels = nic_changes(s, w)
        for num, (bridge, addr), replace in sets:
            extra = ["--bridge", bridge] if bridge is not None else []
            sos.change("net-add", name, addr, num, *(extra + (["--replace"] if replace else [])))
        for num in dels:
            sos.change("net-del", name, num)
        nics_after = []
        for num, (bridge, addr) in sorted(w["nics"].items()):
            cur = [c for c in (s["nics"] if s else []) if c["number"] == num]
            if bridge is None and cur:
                bridge = cur[0]["bridge"]
            nics_after.append({"number": num, "bridge": bridge, "address": addr})

    state = s["state"] if s else "STOPPED"
    if p["state"] == "started":
        if state == "SUSPENDED":
            sos.change("resume", name)
        elif state != "RUNNING":
            sos.change("start", name)
    elif p["state"] == "stopped":
        if state not in DOWN:
            sos.change("stop", name)
    elif p["state"] == "frozen":
        if state not in UP:
            sos.change("start", name)
        if state != "SUSPENDED":
            sos.change("suspend", name)

    changed = bool(sos.commands)
    after = after_view(before, p, w, nics_after)
    if changed and not module.check_mode:
        s = sos.find_slot(name)
        after = view(s, p)
    module.exit_json(
        changed=changed,
        slot=s or {},
        commands=sos.commands,
        diff=dict(before=before, after=after, before_header=name, after_header=name),
    )


if __name__ == "__main__":
    main()
