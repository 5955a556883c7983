#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: slot-os contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: backup
short_description: Backups of a slot (made, deleted, restored, pruned)
version_added: "0.1.0"
description:
  - Manages the backups of one slot with the slot-os commands. Backups are listed with
    C(slot-os backup-list --json).
  - C(present) makes backup C(SLOT.NAME) (C(slot-os backup); a running slot is frozen while
    its root is captured, so the backup is crash-consistent) unless it exists.
  - C(absent) deletes it (C(slot-os backup-del)).
  - C(restored) restores the slot from it (C(slot-os backup-restore)) unless the slot was last
    restored from this very backup. slot-os records that on the slot's image, and
    C(slot-os info --json) shows it as C(restored_from). So a second run changes nothing,
    even after the slot has changed since. Use C(force) to restore again.
  - C(pruned) deletes the slot's oldest backups (those whose name starts with C(name), if
    given) beyond the newest C(keep).
author: slot-os contributors (@slot-os)
options:
  slot:
    description: The slot, by name or number.
    type: str
    required: true
  name:
    description:
      - The backup's name without the slot's, as C(slot-os backup SLOT NAME) takes it (the
        backup is then C(SLOT.NAME)). Required unless C(state=pruned). For C(pruned), only
        backups whose name starts with it are considered.
    type: str
  state:
    description: What to make true of the backup (see the description).
    type: str
    choices: [present, absent, restored, pruned]
    default: present
  keep:
    description: For C(state=pruned), how many of the newest backups to keep.
    type: int
  stop:
    description:
      - For C(state=restored), stop a running slot for the restore and start it again after.
        Without it, restoring a running slot fails with slot-os's message, and nothing is
        changed.
    type: bool
    default: false
  force:
    description: For C(state=restored), restore even if the slot was last restored from this backup.
    type: bool
    default: false
extends_documentation_fragment:
  - slot_os.slot_os.slot_os
seealso:
  - module: slot_os.slot_os.slot
"""

EXAMPLES = r"""
- name: Back up slot01 as slot01.before-upgrade, once
  slot_os.slot_os.backup:
    slot: slot01
    name: before-upgrade

- name: Put slot01 back as it was before the upgrade (stopped and started for it)
  slot_os.slot_os.backup:
    slot: slot01
    name: before-upgrade
    state: restored
    stop: true

- name: Keep the newest 7 automatic backups of slot01
  slot_os.slot_os.backup:
    slot: slot01
    name: auto-
    state: pruned
    keep: 7
"""

RETURN = r"""
backups:
  description: The slot's backups after the task, as C(slot-os backup-list --json) shows them.
  returned: always
  type: list
  elements: dict
commands:
  description: The slot-os commands the task ran (in check mode, would run).
  returned: always
  type: list
  elements: str
restored_from:
  description: The backup the slot was last restored from, after the task (C(slot-os info --json)).
  returned: when state=restored
  type: dict
  sample: {"backup": "slot01.before-upgrade", "created_unix": 1733300000}
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.slot_os.slot_os.plugins.module_utils.slot_os import SlotOS

UP = ("RUNNING", "SUSPENDED", "STARTING")


def backups_of(sos, slot):
    return sorted(
        (b for b in sos.query("backup-list") if b.get("slot") == slot),
        key=lambda b: (b.get("created_unix", 0), b["name"]),
    )


def main():
    module = AnsibleModule(
        argument_spec=dict(
            slot=dict(type="str", required=True),
            name=dict(type="str"),
            state=dict(type="str", default="present", choices=["present", "absent", "restored", "pruned"]),
            keep=dict(type="int"),
            stop=dict(type="bool", default=False),
            force=dict(type="bool", default=False),
        ),
        required_if=[
            ("state", "present", ["name"]),
            ("state", "absent", ["name"]),
            ("state", "restored", ["name"]),
            ("state", "pruned", ["keep"]),
        ],
        supports_check_mode=True,
    )
    p = module.params
    sos = SlotOS(module)
    # The slot's own name (an unknown slot fails here, with slot-os's message).
    slot = sos.query("list", p["slot"])[0]["name"]
    full = "%s.%s" % (slot, p["name"]) if p["name"] is not None else None
    have = backups_of(sos, slot)
    names = [b["name"] for b in have]
    before = {"backups": names}
    after = {"backups": list(names)}
    result = {}

    if p["state"] == "present" and full not in names:
        sos.change("backup", slot, p["name"])
        after["backups"] = sorted(names + [full])
    elif p["state"] == "absent" and full in names:
        sos.change("backup-del", full)
        after["backups"] = [n for n in names if n != full]
    elif p["state"] == "pruned":
        if p["keep"] < 0:
            module.fail_json(msg="keep must be 0 or more")
        chosen = [b for b in have if full is None or b["name"].startswith(full)]
        old = chosen[: max(len(chosen) - p["keep"], 0)]
        for b in old:
            sos.change("backup-del", b["name"])
        after["backups"] = [n for n in names if n not in [b["name"] for b in old]]
    elif p["state"] == "restored":
        backup = [b for b in have if b["name"] == full]
        if not backup:
            module.fail_json(
                msg="no backup named %s (slot-os backup-list); nothing was changed" % full,
                backups=have,
            )
        info = sos.query("info", slot)
        mark = {"backup": full, "created_unix": backup[0]["created_unix"]}
        before = {"restored_from": info.get("restored_from")}
        after = {"restored_from": mark}
        if p["force"] or info.get("restored_from") != mark:
            running = info.get("state") in UP
            if running and p["stop"]:
                sos.change("stop", slot)
            restart = running and p["stop"]
            # A running slot without `stop`: slot-os refuses, with its message. A restore that
            # fails leaves the slot as it was: started again if the task stopped it.
            sos.change(
                "backup-restore", slot, full,
                on_failure=(lambda: sos.change("start", slot)) if restart else None,
            )
            if restart:
                sos.change("start", slot)
        if sos.commands and not module.check_mode:
            result["restored_from"] = sos.query("info", slot).get("restored_from")
        else:
            result["restored_from"] = after["restored_from"] if sos.commands else before["restored_from"]

    changed = bool(sos.commands)
    module.exit_json(
        changed=changed,
        backups=backups_of(sos, slot) if changed and not module.check_mode else have,
        commands=sos.commands,
        diff=dict(before=before, after=after, before_header=slot, after_header=slot),
        **result
    )


if __name__ == "__main__":
    main()
