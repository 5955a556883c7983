# -*- coding: utf-8 -*-
# Copyright: slot-os contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Running ``slot-os`` on a slot-os host from the controller, for the inventory plugin
(``slot-os list --json`` on every host) and the connection plugin (``slot-os exec`` into a
slot): on the controller itself (the host's connection is ``local``), or over ssh with the
host's address, user, port, key and ssh arguments as the inventory gives them.

Over ssh, one master connection per host is kept open for a minute (ControlPersist, as
Ansible's own ssh connection does), so a play's many small commands do not each pay for a
new ssh handshake.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import shlex
import subprocess

DEFAULT_SSH_ARGS = "-C -o ControlMaster=auto -o ControlPersist=60s"
LOCAL_NAMES = ("localhost", "127.0.0.1", "::1")


class SlotOsHost(object):
    """One slot-os host, as the controller reaches it."""

    def __init__(self, name, connection=None, address=None, user=None, port=None, ssh_args=None,
                 private_key_file=None, become=False, become_exe="sudo", command="slot-os"):
        self.name = name
        if connection is None:
            # As Ansible: ssh, unless the host is the controller by name (not by address:
            # ssh to 127.0.0.1 is a choice someone made).
            connection = "local" if address is None and name in LOCAL_NAMES else "ssh"
        if connection not in ("local", "ssh"):
            raise ValueError(
                "slot-os host %s: connection %r; slot-os hosts are reached with 'local' or 'ssh'"
                % (name, connection)
            )
        self.connection = connection
        self.address = address or name
        self.user = user
        self.port = port
        self.ssh_args = DEFAULT_SSH_ARGS if ssh_args is None else ssh_args
        self.private_key_file = private_key_file
        self.become = bool(become)
        self.become_exe = become_exe
        self.command = command

    def argv(self, args):
        """The controller's argv that runs ``slot-os ARGS...`` on the host."""
        remote = ([self.become_exe, "-n"] if self.become else []) + [self.command] + [str(a) for a in args]
        if self.connection == "local":
            return remote
        cmd = ["ssh", "-o", "BatchMode=yes"]
        cmd += shlex.split(self.ssh_args)
        if "ControlPath" not in self.ssh_args:
            cp = os.path.expanduser("~/.ansible/cp")
            if not os.path.isdir(cp):
                os.makedirs(cp, 0o700)
            cmd += ["-o", "ControlPath=%s/slot-os-%%C" % cp]
        if self.port:
            cmd += ["-p", str(self.port)]
        if self.user:
            cmd += ["-l", self.user]
        if self.private_key_file:
            cmd += ["-i", os.path.expanduser(self.private_key_file)]
        # ssh hands the remote side one string for its shell: every word quoted.
        return cmd + ["--", self.address, " ".join(shlex.quote(w) for w in remote)]

    def run(self, args, stdin=None, stdout=None):
        """Runs ``slot-os ARGS...``; returns (rc, stdout bytes, stderr bytes). ``stdin`` is
        bytes or a file object; ``stdout`` a file object to write to instead of returning."""
        data = stdin if isinstance(stdin, bytes) else None
        p = subprocess.Popen(
            self.argv(args),
            stdin=subprocess.PIPE if data is not None else (stdin or subprocess.DEVNULL),
            stdout=stdout or subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        out, err = p.communicate(data)
        return p.returncode, out or b"", err or b""

    def describe(self):
        if self.connection == "local":
            return "%s (local)" % self.name
        return "%s (ssh %s%s)" % (self.name, (self.user + "@") if self.user else "", self.address)
