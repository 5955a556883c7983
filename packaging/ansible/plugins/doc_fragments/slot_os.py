# -*- coding: utf-8 -*-
# Copyright: slot-os contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    """What every slot-os module shares: where it runs and what it supports."""

    DOCUMENTATION = r"""
options: {}
notes:
  - Needs slot-os on the managed host, run as root (C(become=true)).
  - Supports C(check_mode) and C(diff_mode). The diff shows what the module manages, before
    and after.
  - A value that slot-os refuses fails the task with slot-os's message and exit code
    (C(rc=2) means bad input, and nothing was changed).
"""
