#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: slot-os contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: bridge
short_description: A bridge of a slot-os host (slotbrN), with addresses, host NICs and VXLAN
version_added: "0.1.0"
description:
  - Makes bridge C(slotbrN) of a slot-os host what the task says, with the same commands an
    admin types. The current state is read with C(slot-os br-info --json). C(slot-os br-add)
    adds the bridge, its addresses, its host NICs or its VXLAN port. C(slot-os net-nic-del)
    stops sharing a host NIC, and C(slot-os br-del) removes the bridge. A command runs only
    for what has to change.
  - slot-os cannot remove one address of a bridge. An address that the bridge has but
    C(address) does not list fails the task with a message; nothing is changed.
author: slot-os contributors (@slot-os)
options:
  number:
    description: The bridge's number N (C(slotbrN)).
    type: int
    required: true
  state:
    description:
      - C(present) the bridge exists with the listed addresses, devices and VXLAN port.
      - C(absent) it is removed. slot-os refuses while slots have NICs on it; remove those
        first (M(slot_os.slot_os.slot) C(nics)).
    type: str
    choices: [present, absent]
    default: present
  address:
    description:
      - The host's addresses on the bridge, like C(192.168.18.1/24). When given, the whole
        list.
    type: list
    elements: str
  device:
    description:
      - Host NICs enslaved to the bridge, so outside hosts reach the slots. When given, the
        whole list. A NIC shared but not listed is released (C(slot-os net-nic-del)).
    type: list
    elements: str
  vxlan:
    description:
      - A VXLAN port (C(slotvxN)) so slots on several hosts share the bridge's network,
        exactly as C(slot-os br-add N --vxlan ...) takes it. Left out, the VXLAN port is
        left alone.
    type: dict
    suboptions:
      id:
        description: VXLAN network identifier (1 to 16777215), the same on every host.
        type: int
        required: true
      remote:
        description: The other host's address (point to point).
        type: str
      group:
        description: A multicast group that joins any number of hosts.
        type: str
      local:
        description: This host's address to send from.
        type: str
      port:
        description: UDP port (slot-os's default 4789).
        type: int
  backend:
    description:
      - C(networkd) (a Linux bridge) or C(ovs) (Open vSwitch). Only used when the bridge is
        added; slot-os refuses to change the backend of an existing bridge.
    type: str
    choices: [networkd, ovs]
extends_documentation_fragment:
  - slot_os.slot_os.slot_os
seealso:
  - module: slot_os.slot_os.slot
"""

EXAMPLES = r"""
- name: Bridge 1 with the host's address 192.168.18.1/24
  slot_os.slot_os.bridge:
    number: 1
    address: [192.168.18.1/24]

- name: Bridge 2 spans two hosts over VXLAN 42
  slot_os.slot_os.bridge:
    number: 2
    address: [10.42.0.1/24]
    vxlan: {id: 42, remote: 192.0.2.20}

- name: Bridge 3 gone
  slot_os.slot_os.bridge:
    number: 3
    state: absent
"""

RETURN = r"""
bridge:
  description: The bridge as C(slot-os br-info --json) shows it after the task (empty if absent).
  returned: always
  type: dict
  sample: {"number": 1, "name": "slotbr1", "addresses": ["192.168.18.1/24"], "exists": true}
commands:
  description: The slot-os commands the task ran (in check mode, would run).
  returned: always
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.slot_os.slot_os.plugins.module_utils.slot_os import SlotOS, interface


def find(sos, number):
    for b in sos.query("br-info"):
        if b.get("number") == number:
            return b
    return None


def view(b):
    if b is None:
        return {"exists": False}
    v = {
        "exists": True,
        "backend": b["backend"],
        "address": sorted(b["addresses"]),
        "device": sorted(b["devices"]),
    }
    if b.get("vxlan"):
        v["vxlan"] = dict((k, x) for k, x in b["vxlan"].items() if x is not None)
    return v


def vxlan_args(v):
    args = ["--vxlan", v["id"]]
    for k in ("remote", "group", "local", "port"):
        if v.get(k) is not None:
            args += ["--" + k, v[k]]
    return args


def vxlan_differs(have, want):
    """Whether the bridge's VXLAN port differs from ``want`` (a port or address slot-os
    fills in by default counts as the same when ``want`` leaves it out)."""
    if not have:
        return True
    for k in ("id", "remote", "group", "local", "port"):
        if want.get(k) is not None and str(want[k]) != str(have.get(k)):
            return True
        if want.get(k) is None and k in ("remote", "group", "local") and have.get(k) is not None:
            return True
    return False


def main():
    module = AnsibleModule(
        argument_spec=dict(
            number=dict(type="int", required=True),
            state=dict(type="str", default="present", choices=["present", "absent"]),
            address=dict(type="list", elements="str"),
            device=dict(type="list", elements="str"),
            vxlan=dict(
                type="dict",
                options=dict(
                    id=dict(type="int", required=True),
                    remote=dict(type="str"),
                    group=dict(type="str"),
                    local=dict(type="str"),
                    port=dict(type="int"),
                ),
                mutually_exclusive=[["remote", "group"]],
            ),
            backend=dict(type="str", choices=["networkd", "ovs"]),
        ),
        supports_check_mode=True,
    )
    p = module.params
    n = p["number"]
    sos = SlotOS(module)
    b = find(sos, n)
    before = view(b)
    header = "bridge %d" % n

    if p["state"] == "absent":
        if b is not None:
            sos.change("br-del", n)
        module.exit_json(
            changed=bool(sos.commands), bridge={}, commands=sos.commands,
            diff=dict(before=before, after={"exists": False}, before_header=header, after_header=header),
        )

    # Addresses are compared in slot-os's form; one the module cannot read goes to
    # slot-os as given, which refuses it with its own message.
    want_addr = None
    if p["address"] is not None:
        want_addr = []
        for a in p["address"]:
            try:
                want_addr.append(interface(a))
            except ValueError as e:
                if module.check_mode:
                    module.fail_json(msg="address: %s; nothing was changed" % e)
                want_addr.append(a)
    have_addr = [interface(a) for a in b["addresses"]] if b else []
    if want_addr is not None:
        extra = [a for a in have_addr if a not in want_addr]
        if extra:
            module.fail_json(
                msg="bridge %d has %s, which address does not list; slot-os cannot remove one "
                "address of a bridge (br-del it, after its slots' NICs, and add it again); "
                "nothing was changed" % (n, ", ".join(extra)),
                bridge=b,
            )
    add_addr = [a for a in (want_addr or []) if a not in have_addr]
    have_dev = b["devices"] if b else []
    add_dev = [d for d in (p["device"] or []) if d not in have_dev]
    del_dev = [d for d in have_dev if p["device"] is not None and d not in p["device"]]
    vx = p["vxlan"] if p["vxlan"] is not None and vxlan_differs(b and b.get("vxlan"), p["vxlan"]) else None

    if b is not None and p["backend"] and p["backend"] != b["backend"]:
        # slot-os refuses to change a backend, with its message, and changes nothing.
        sos.change("br-add", n, "--backend", p["backend"], *(have_addr[:1] or have_dev[:1]))
    if b is None and not (add_addr or add_dev or vx):
        module.fail_json(msg="bridge %d does not exist; give it an address, a device or a vxlan port" % n)
    # One br-add per address and device; the first also carries the VXLAN port and, for a
    # new bridge, its backend.
    calls = [[x] for x in add_addr + add_dev]
    if vx:
        if not calls:
            calls.append([])
        calls[0] += vxlan_args(vx)
    if calls and b is None and p["backend"]:
        calls[0] += ["--backend", p["backend"]]
    for c in calls:
        sos.change("br-add", n, *c)
    for d in del_dev:
        sos.change("net-nic-del", d)

    changed = bool(sos.commands)
    if changed and not module.check_mode:
        b = find(sos, n)
        after = view(b)
    else:
        after = dict(before)
        after.update(exists=True, backend=before.get("backend") or p["backend"] or "networkd")
        after["address"] = sorted(set(have_addr) | set(add_addr))
        after["device"] = sorted(set(have_dev) | set(add_dev) - set(del_dev))
        if p["vxlan"] is not None:
            after["vxlan"] = dict((k, x) for k, x in p["vxlan"].items() if x is not None)
    module.exit_json(
        changed=changed, bridge=b or {}, commands=sos.commands,
        diff=dict(before=before, after=after, before_header=header, after_header=header),
    )


if __name__ == "__main__":
    main()
