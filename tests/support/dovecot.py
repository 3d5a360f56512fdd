"""A private Dovecot IMAP server for the tests: Debian's ``dovecot-imapd`` binaries, a configuration
of its own in a temporary folder, a free port on 127.0.0.1, one user with a password in a file.

It never runs as root: started by root (as in CI containers), it runs as the ``dovecot`` system user
the package creates; started by anyone else, as that user. ``.ci/run`` installs the package when it
is missing; a test that needs it and cannot find it fails with that sentence.
"""

from __future__ import annotations

import getpass
import imaplib
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from tests.conftest import free_port

USER, PASSWORD = "bounces", "bounce-mailbox-password"


class Dovecot:
    def __init__(self):
        binary = shutil.which("dovecot") or ("/usr/sbin/dovecot" if Path("/usr/sbin/dovecot").exists() else None)
        if binary is None:
            raise AssertionError("Dovecot is not installed: apt-get install -y dovecot-imapd (.ci/run does it).")
        self.binary = binary
        self.folder = Path(tempfile.mkdtemp(prefix="dovecot-test-"))
        self.port = free_port()
        self.run_as = "dovecot" if os.geteuid() == 0 else getpass.getuser()

    @property
    def url(self) -> str:
        return f"imap://{USER}:{PASSWORD}@127.0.0.1:{self.port}/INBOX"

    def _config(self) -> str:
        f = self.folder
        return f"""
base_dir = {f}/run
state_dir = {f}/state
instance_name = loyalty-test-{self.port}
log_path = {f}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_failure_delay = 0
default_login_user = {self.run_as}
default_internal_user = {self.run_as}
default_internal_group = {self.run_as if self.run_as == "dovecot" else os.getgid()}
first_valid_uid = 1
mail_location = maildir:{f}/mail/%u
service imap-login {{
  chroot =
  inet_listener imap {{
    address = 127.0.0.1
    port = {self.port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service anvil {{
  chroot =
}}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {f}/users
}}
userdb {{
  driver = static
  args = uid={self.run_as} gid={self.run_as if self.run_as == "dovecot" else os.getgid()} home={f}/home/%u
}}
"""

    def start(self) -> Dovecot:
        for sub in ("run", "state", "mail", "home"):
            (self.folder / sub).mkdir()
        (self.folder / "dovecot.conf").write_text(self._config())
        (self.folder / "users").write_text(f"{USER}:{{PLAIN}}{PASSWORD}\n")
        command = [self.binary, "-c", str(self.folder / "dovecot.conf")]
        if os.geteuid() == 0:
            subprocess.run(["chown", "-R", "dovecot:dovecot", str(self.folder)], check=True)
            command = ["runuser", "-u", "dovecot", "--", *command]
        with open(self.folder / "start.log", "wb") as output:  # the daemon keeps its descriptors: not a pipe
            subprocess.run(command, check=True, stdout=output, stderr=subprocess.STDOUT, timeout=30)
        deadline = time.monotonic() + 15
        while True:
            try:
                with self.client():
                    return self
            except (OSError, imaplib.IMAP4.error):
                if time.monotonic() > deadline:
                    log = (self.folder / "dovecot.log").read_text() if (self.folder / "dovecot.log").exists() else ""
                    raise AssertionError(f"Dovecot did not answer on port {self.port}: {log[-2000:]}") from None
                time.sleep(0.1)

    def client(self) -> imaplib.IMAP4:
        client = imaplib.IMAP4("127.0.0.1", self.port, timeout=10)
        client.login(USER, PASSWORD)
        return client

    def deliver(self, raw: bytes, folder: str = "INBOX") -> None:
        """Put a message in the mailbox, as the mail server that received it would."""
        with self.client() as imap:
            status, _ = imap.append(folder, None, None, raw)
            assert status == "OK"

    def unseen(self, folder: str = "INBOX") -> int:
        with self.client() as imap:
            imap.select(folder)
            _, data = imap.uid("SEARCH", None, "UNSEEN")
            return len((data[0] or b"").split())

    def stop(self) -> None:
        pid_file = self.folder / "run" / "master.pid"
        if pid_file.exists():
            pid = int(pid_file.read_text().strip())
            try:
                os.kill(pid, 15)  # the master this instance started (its own pid file), never by name
            except ProcessLookupError:
                pass
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                if _defunct(pid):  # gone, or a zombie left for the system to collect
                    break
                # The master waits for its log process, which lingers about 2.5 s after the others have
                # gone: once it is the last child left, it is ended (the master's own child, by pid).
                living = [child for child in _children(pid) if not _defunct(child)]
                if living and all(_name(child).endswith("/log") for child in living):
                    for child in living:
                        _kill(child)
                time.sleep(0.05)
        shutil.rmtree(self.folder, ignore_errors=True)


def _children(pid: int) -> list[int]:
    try:
        return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
    except OSError:
        return ""


def _defunct(pid: int) -> bool:
    """Whether the process has ended (no entry left, or a zombie: ``kill(pid, 0)`` still finds those)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] == "Z"
    except OSError:
        return True


def _kill(pid: int) -> None:
    try:
        os.kill(pid, 9)
    except ProcessLookupError:
        pass
