# -*- coding: utf-8 -*-
# Copyright: slot-os contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
name: slot
short_description: Run tasks inside a slot of a slot-os host (slot-os exec)
version_added: "0.1.0"
description:
  - Runs a task's commands inside a running slot with C(slot-os exec SLOT -- /bin/sh -c CMD)
    on the slot's slot-os host. The command is a transient service of the slot's own systemd,
    so it stays within the slot's CPU and memory limits. Files go in and out through the
    same path (C(cat) inside the slot), so no ssh server is needed in the slot.
  - The slot-os host is the controller itself (C(host_connection=local)), or is reached
    over ssh with the host's address, user, port and key. The inventory plugin
    P(slot_os.slot_os.slots#inventory) sets all of these for every slot it lists.
  - Tasks run as root in the slot. There is no become inside the slot; the inventory plugin
    sets C(ansible_become=false) for slots so that a play's C(become) does not ask for sudo
    there.
  - Modules need Python in the slot. Without it, a module fails with the shell's
    "not found" for the interpreter (rc 127). The M(ansible.builtin.raw) module still works,
    for example to install Python with C(apt-get install -y python3).
author: slot-os contributors (@slot-os)
options:
  slot:
    description: The slot, by name. Default, the inventory host's address (C(ansible_host), else its name).
    type: str
    vars:
      - name: slot_os_slot
  host:
    description: The slot-os host's address (for ssh), or its inventory name.
    type: str
    default: localhost
    vars:
      - name: slot_os_host_address
  host_connection:
    description: How the controller reaches the slot-os host.
    type: str
    choices: [local, ssh]
    default: local
    vars:
      - name: slot_os_host_connection
  host_user:
    description: The ssh user on the slot-os host.
    type: str
    vars:
      - name: slot_os_host_user
  host_port:
    description: The ssh port of the slot-os host.
    type: int
    vars:
      - name: slot_os_host_port
  host_ssh_args:
    description: Arguments for ssh to the slot-os host (as C(ansible_ssh_args) and C(ansible_ssh_common_args)).
    type: str
    vars:
      - name: slot_os_host_ssh_args
  host_private_key_file:
    description: The ssh key for the slot-os host.
    type: str
    vars:
      - name: slot_os_host_private_key_file
  host_become:
    description: Run slot-os through C(sudo -n) on the slot-os host (for a non-root ssh user).
    type: bool
    default: false
    vars:
      - name: slot_os_host_become
  slot_os_command:
    description: The slot-os command on the slot-os host.
    type: str
    default: slot-os
    vars:
      - name: slot_os_command
"""

import json
import os

from ansible.errors import AnsibleConnectionFailure, AnsibleError, AnsibleFileNotFound
from ansible.module_utils.common.text.converters import to_bytes, to_native, to_text
from ansible.plugins.connection import ConnectionBase
from ansible.utils.display import Display
from ansible_collections.slot_os.slot_os.plugins.plugin_utils.host import SlotOsHost

display = Display()


class Connection(ConnectionBase):
    """Commands and files into a slot through ``slot-os exec``."""

    transport = "slot_os.slot_os.slot"
    has_pipelining = True
    default_user = "root"

    def __init__(self, *args, **kwargs):
        super(Connection, self).__init__(*args, **kwargs)
        self._host = None
        self._slot = None

    def _connect(self):
        if self._connected:
            return self
        self._slot = self.get_option("slot") or self._play_context.remote_addr
        self._host = SlotOsHost(
            self.get_option("host"),
            connection=self.get_option("host_connection"),
            user=self.get_option("host_user"),
            port=self.get_option("host_port"),
            ssh_args=self.get_option("host_ssh_args"),
            private_key_file=self.get_option("host_private_key_file"),
            become=self.get_option("host_become"),
            command=self.get_option("slot_os_command"),
        )
        # A slot that is not running cannot take commands: say so, rather than let every
        # task fail with whatever `slot-os exec` prints.
        rc, out, err = self._host.run(["list", self._slot, "--json"])
        if rc != 0:
            raise AnsibleConnectionFailure(
                "slot %s on %s: %s" % (self._slot, self._host.describe(), to_text(err or out).strip())
            )
        try:
            state = json.loads(to_text(out))[0].get("state", "")
        except (ValueError, IndexError, AttributeError):
            raise AnsibleConnectionFailure("slot %s: slot-os list printed no slot" % self._slot)
        if state not in ("RUNNING", "STARTING"):
            raise AnsibleConnectionFailure(
                "slot %s on %s is %s; tasks run in running slots (slot_os.slot_os.slot state=started)"
                % (self._slot, self._host.describe(), state)
            )
        display.vvv("slot-os exec into %s on %s" % (self._slot, self._host.describe()), host=self._slot)
        self._connected = True
        return self

    def _exec(self, argv, stdin=None, stdout=None):
        return self._host.run(["exec", self._slot, "--"] + argv, stdin=stdin, stdout=stdout)

    def exec_command(self, cmd, in_data=None, sudoable=True):
        super(Connection, self).exec_command(cmd, in_data=in_data, sudoable=sudoable)
        display.vvv("EXEC %s" % cmd, host=self._slot)
        data = to_bytes(in_data) if in_data is not None else None
        return self._exec(["/bin/sh", "-c", to_text(cmd)], stdin=data)

    def put_file(self, in_path, out_path):
        super(Connection, self).put_file(in_path, out_path)
        display.vvv("PUT %s TO %s" % (in_path, out_path), host=self._slot)
        if not os.path.exists(to_bytes(in_path)):
            raise AnsibleFileNotFound("file or module does not exist: %s" % in_path)
        with open(to_bytes(in_path), "rb") as f:
            rc, out, err = self._exec(["/bin/sh", "-c", 'cat > "$1"', "sh", out_path], stdin=f)
        if rc != 0:
            raise AnsibleError(
                "failed to put %s into slot %s at %s (rc %d): %s"
                % (in_path, self._slot, out_path, rc, to_native(err or out).strip())
            )

    def fetch_file(self, in_path, out_path):
        super(Connection, self).fetch_file(in_path, out_path)
        display.vvv("FETCH %s TO %s" % (in_path, out_path), host=self._slot)
        tmp = "%s.slot-os-part" % out_path
        try:
            with open(to_bytes(tmp), "wb") as f:
                rc, out, err = self._exec(["cat", "--", in_path], stdout=f)
            if rc != 0:
                raise AnsibleError(
                    "failed to fetch %s from slot %s (rc %d): %s"
                    % (in_path, self._slot, rc, to_native(err).strip())
                )
            os.rename(to_bytes(tmp), to_bytes(out_path))
        finally:
            if os.path.exists(to_bytes(tmp)):
                os.unlink(to_bytes(tmp))

    def close(self):
        self._connected = False
