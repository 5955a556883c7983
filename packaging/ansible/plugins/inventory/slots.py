# -*- coding: utf-8 -*-
# Copyright: slot-os contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
name: slots
short_description: The slots of every slot-os host, as inventory hosts
version_added: "0.1.0"
description:
  - Lists the slots of every slot-os host with C(slot-os list --json) on that host, so that a
    play can target slots. The slot-os hosts are the members of a group from the inventory
    sources before this one (C(hosts_group)), or named in C(hosts). Each host is reached the
    way the inventory says. C(ansible_connection=local) (or a host named C(localhost)) runs
    slot-os on the controller; any other host over ssh, with its C(ansible_host),
    C(ansible_user), C(ansible_port), C(ansible_ssh_private_key_file) and ssh arguments
    (C(ansible_ssh_common_args), C(ansible_ssh_extra_args)) from its host and group vars.
  - Each slot becomes host C(SLOT@HOST) (see C(name_format)). It uses the connection plugin
    P(slot_os.slot_os.slot#connection), so tasks run inside the slot.
  - "Host vars: C(slot_os_slot), C(slot_os_host), C(slot_os_state) (C(RUNNING), C(STOPPED),
    C(SUSPENDED), ...), C(slot_os_addresses), C(slot_os_number), C(slot_os_image),
    C(slot_os_autostart), and C(slot_os_info) (the whole C(slot-os list --json) entry)."
  - "Groups: C(slot_os_slots) (every slot), C(slot_os_on_HOST) (the slots of one host) and
    C(slot_os_STATE) (C(slot_os_running), C(slot_os_stopped), ...), plus the usual
    C(compose), C(groups) and C(keyed_groups)."
  - A host whose slots cannot be listed is skipped with a warning (an error with C(strict)).
author: slot-os contributors (@slot-os)
options:
  plugin:
    description: Marks the file as this plugin's.
    required: true
    choices: [slot_os.slot_os.slots]
  hosts_group:
    description: The inventory group whose hosts are slot-os hosts (from earlier inventory sources).
    type: str
    default: slot_os_hosts
  hosts:
    description: More slot-os hosts, by inventory name or address (reached with their inventory vars if they have any).
    type: list
    elements: str
    default: []
  become:
    description:
      - Run slot-os through C(sudo -n) on hosts reached over ssh as a user other than root.
        Defaults to each host's C(ansible_become).
    type: bool
  name_format:
    description: The inventory name of a slot, from C({slot}) and C({host}).
    type: str
    default: "{slot}@{host}"
  slot_os_command:
    description: The slot-os command on the hosts.
    type: str
    default: slot-os
extends_documentation_fragment:
  - constructed
"""

EXAMPLES = r"""
# inventory/hosts.ini: the slot-os hosts
#   [slot_os_hosts]
#   host1.example.org ansible_user=admin ansible_become=true
#   localhost ansible_connection=local
#
# inventory/slot_os.yml (after hosts.ini: ansible-playbook -i inventory/hosts.ini -i inventory/slot_os.yml)
plugin: slot_os.slot_os.slots
keyed_groups:
  - key: slot_os_info.image
    prefix: image
"""

import json

from ansible.errors import AnsibleParserError
from ansible.inventory.helpers import get_group_vars
from ansible.module_utils.common.text.converters import to_text
from ansible.plugins.inventory import BaseInventoryPlugin, Constructable
from ansible.utils.vars import combine_vars
from ansible_collections.slot_os.slot_os.plugins.plugin_utils.host import SlotOsHost

CONNECTION = "slot_os.slot_os.slot"


class InventoryModule(BaseInventoryPlugin, Constructable):
    NAME = "slot_os.slot_os.slots"

    def verify_file(self, path):
        return super(InventoryModule, self).verify_file(path) and path.endswith(
            ("slot_os.yml", "slot_os.yaml", "slots.yml", "slots.yaml")
        )

    def _host_vars(self, name):
        """The vars the inventory so far gives host ``name`` (group vars, then host vars)."""
        h = self.inventory.get_host(name)
        if h is None:
            return {}
        return combine_vars(get_group_vars(h.get_groups()), h.get_vars())

    def _reach(self, name):
        """How to run slot-os on host ``name``: local or ssh, from its inventory vars."""
        v = self._host_vars(name)
        ssh_args = None
        parts = [v.get(k) for k in ("ansible_ssh_args", "ansible_ssh_common_args", "ansible_ssh_extra_args")]
        if any(parts):
            base = parts[0] if parts[0] is not None else "-C -o ControlMaster=auto -o ControlPersist=60s"
            ssh_args = " ".join(str(x) for x in [base] + parts[1:] if x)
        become = self.get_option("become")
        if become is None:
            become = bool(v.get("ansible_become", False))
        user = v.get("ansible_user")
        return SlotOsHost(
            name,
            connection=v.get("ansible_connection"),
            address=v.get("ansible_host"),
            user=user,
            port=v.get("ansible_port"),
            ssh_args=ssh_args,
            private_key_file=v.get("ansible_ssh_private_key_file") or v.get("ansible_private_key_file"),
            become=become and user not in (None, "root") and v.get("ansible_connection") != "local",
            command=self.get_option("slot_os_command"),
        )

    def _slots(self, host):
        rc, out, err = host.run(["list", "--json"])
        if rc != 0:
            raise ValueError("slot-os list --json on %s failed (rc %d): %s"
                             % (host.describe(), rc, to_text(err or out).strip()))
        try:
            slots = json.loads(to_text(out))
        except ValueError as e:
            raise ValueError("slot-os list --json on %s printed no JSON: %s" % (host.describe(), e))
        if not isinstance(slots, list):
            raise ValueError("slot-os list --json on %s printed no list" % host.describe())
        return slots

    def parse(self, inventory, loader, path, cache=True):
        super(InventoryModule, self).parse(inventory, loader, path, cache)
        self._read_config_data(path)
        strict = self.get_option("strict")
        names = []
        group = self.inventory.groups.get(self.get_option("hosts_group"))
        if group is not None:
            names += [h.name for h in group.get_hosts()]
        names += [n for n in self.get_option("hosts") if n not in names]
        if not names:
            self.display.warning(
                "slot_os.slot_os.slots: no slot-os hosts (group %s is empty or comes later; list it in an earlier "
                "inventory source, or name hosts in `hosts`)" % self.get_option("hosts_group")
            )
        self.inventory.add_group("slot_os_slots")
        for name in names:
            try:
                host = self._reach(name)
                slots = self._slots(host)
            except (ValueError, OSError) as e:
                if strict:
                    raise AnsibleParserError(str(e))
                self.display.warning("slot_os.slot_os.slots: skipping %s: %s" % (name, e))
                continue
            by_host = self._sanitize_group_name("slot_os_on_%s" % name)
            self.inventory.add_group(by_host)
            for s in slots:
                self._add_slot(host, s, by_host, strict)

    def _add_slot(self, host, s, by_host, strict):
        slot = s.get("name")
        if not slot:
            return
        hn = self.get_option("name_format").format(slot=slot, host=host.name)
        self.inventory.add_host(hn, group="slot_os_slots")
        self.inventory.add_child(by_host, hn)
        state = str(s.get("state", "UNKNOWN"))
        by_state = self._sanitize_group_name("slot_os_%s" % state.lower())
        self.inventory.add_group(by_state)
        self.inventory.add_child(by_state, hn)
        hv = {
            "slot_os_slot": slot,
            "slot_os_host": host.name,
            "slot_os_state": state,
            "slot_os_addresses": s.get("addresses", []),
            "slot_os_number": s.get("number"),
            "slot_os_image": s.get("image"),
            "slot_os_autostart": s.get("autostart"),
            "slot_os_info": s,
            "ansible_connection": CONNECTION,
            # Tasks run as root in the slot; a play's become must not ask for sudo there.
            "ansible_become": False,
            "slot_os_host_address": host.address,
            "slot_os_host_connection": host.connection,
            "slot_os_host_become": host.become,
            "slot_os_command": host.command,
        }
        if host.connection == "ssh":
            hv.update(
                slot_os_host_user=host.user,
                slot_os_host_port=host.port,
                slot_os_host_ssh_args=host.ssh_args,
                slot_os_host_private_key_file=host.private_key_file,
            )
        for k, v in hv.items():
            if v is not None:
                self.inventory.set_variable(hn, k, v)
        self._set_composite_vars(self.get_option("compose"), hv, hn, strict=strict)
        self._add_host_to_composed_groups(self.get_option("groups"), hv, hn, strict=strict)
        self._add_host_to_keyed_groups(self.get_option("keyed_groups"), hv, hn, strict=strict)
