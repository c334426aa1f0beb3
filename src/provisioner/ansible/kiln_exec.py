# kiln's Ansible connection: every command runs inside the build instance
# through the argument prefix kiln puts in KILN_ANSIBLE_EXEC (a JSON list,
# e.g. `runc --root ... exec <session container>`). kiln writes this file
# to a private folder for one `ansible` provisioner run and removes it
# afterwards; it is not meant to be used outside kiln.
from __future__ import annotations

DOCUMENTATION = """
name: kiln_exec
short_description: run commands inside a kiln build instance
description:
  - Runs commands, and copies files, through the exec prefix kiln gives in KILN_ANSIBLE_EXEC.
author: kiln
"""

import json
import os
import subprocess

from ansible.errors import AnsibleConnectionFailure, AnsibleError
from ansible.plugins.connection import ConnectionBase


class Connection(ConnectionBase):
    transport = "kiln_exec"
    has_pipelining = False

    def _prefix(self):
        try:
            prefix = json.loads(os.environ["KILN_ANSIBLE_EXEC"])
        except (KeyError, ValueError) as e:
            raise AnsibleConnectionFailure("kiln_exec: kiln did not set KILN_ANSIBLE_EXEC (%s)" % e)
        if not isinstance(prefix, list) or not all(isinstance(w, str) for w in prefix):
            raise AnsibleConnectionFailure("kiln_exec: KILN_ANSIBLE_EXEC is not a list of words")
        return prefix

    def _connect(self):
        self._connected = True
        return self

    def exec_command(self, cmd, in_data=None, sudoable=True):
        super().exec_command(cmd, in_data=in_data, sudoable=sudoable)
        argv = self._prefix() + ["/bin/sh", "-c", cmd]
        if in_data is None:
            p = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True)
        else:
            p = subprocess.run(argv, input=in_data, capture_output=True)
        return p.returncode, p.stdout, p.stderr

    def put_file(self, in_path, out_path):
        super().put_file(in_path, out_path)
        with open(in_path, "rb") as f:
            p = subprocess.run(
                self._prefix() + ["/bin/sh", "-c", 'cat > "$1"', "sh", out_path],
                stdin=f,
                capture_output=True,
            )
        if p.returncode != 0:
            raise AnsibleError(
                "kiln_exec: cannot write %s in the instance: %s"
                % (out_path, p.stderr.decode(errors="replace"))
            )

    def fetch_file(self, in_path, out_path):
        super().fetch_file(in_path, out_path)
        with open(out_path, "wb") as f:
            p = subprocess.run(
                self._prefix() + ["cat", "--", in_path],
                stdin=subprocess.DEVNULL,
                stdout=f,
                stderr=subprocess.PIPE,
            )
        if p.returncode != 0:
            raise AnsibleError(
                "kiln_exec: cannot read %s in the instance: %s"
                % (in_path, p.stderr.decode(errors="replace"))
            )

    def close(self):
        self._connected = False
