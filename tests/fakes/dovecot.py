"""A real Dovecot IMAP server (Debian's dovecot-imapd) on a loopback port, for the IMAP tests.

Each instance lives in its own temporary directory (config, passwd-file, maildirs, sockets,
logs) and runs in the foreground (``dovecot -F -c <conf>``); nothing system-wide is touched.

Dovecot runs *rootless*: every process under one unprivileged user. As root we start it as
``nobody`` (a root-run Dovecot refuses mail access for UID 0, and pytest's tmp dirs are 0700 to
root, so the directory is a fresh ``mkdtemp`` handed to that user); otherwise as ourselves.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from imapclient import IMAPClient

from core.config import ImapMailboxSettings

DOVECOT = shutil.which("dovecot") or "/usr/sbin/dovecot"


def dovecot_version() -> tuple[int, int]:
    out = subprocess.run([DOVECOT, "--version"], capture_output=True, text=True, check=True)
    major, minor = re.match(r"(\d+)\.(\d+)", out.stdout).groups()  # type: ignore[union-attr]
    return int(major), int(minor)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _config_23(root: Path, port: int, user: str, capability: str) -> str:
    # Rootless layout (doc.dovecot.org "HowTo/Rootless"): one user for everything, no chroots.
    return f"""
protocols = imap
listen = 127.0.0.1
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
instance_name = helpline-test-{port}
default_internal_user = {user}
default_internal_group = {_group(user)}
default_login_user = {user}
first_valid_uid = 1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root}/passwd
}}
userdb {{
  driver = static
  args = uid={user} gid={_group(user)} home={root}/home/%u
}}
mail_location = maildir:~/Maildir
# IDLE notices new mail at once (inotify) or within this interval
mailbox_idle_check_interval = 1 secs
protocol imap {{
  mail_max_userip_connections = 50
  {capability}
}}
service imap-login {{
  chroot =
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service anvil {{
  chroot =
}}
service pop3-login {{
  chroot =
}}
service submission-login {{
  chroot =
}}
service imap-urlauth-login {{
  chroot =
}}
service stats {{
  inet_listener http {{
    port = 0
  }}
}}
"""


def _config_24(root: Path, port: int, user: str, capability: str) -> str:
    # Dovecot 2.4 renamed most settings. Written from its documentation; the CI image ships 2.3.
    return f"""
dovecot_config_version = 2.4.0
dovecot_storage_version = 2.4.0
protocols = imap
listen = 127.0.0.1
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
instance_name = helpline-test-{port}
default_internal_user = {user}
default_internal_group = {_group(user)}
default_login_user = {user}
first_valid_uid = 1
ssl = no
auth_allow_cleartext = yes
auth_mechanisms = plain login
passdb passwd-file {{
  passwd_file_path = {root}/passwd
  default_password_scheme = PLAIN
}}
userdb static {{
  fields {{
    uid = {user}
    gid = {_group(user)}
    home = {root}/home/%{{user}}
  }}
}}
mail_driver = maildir
mail_path = ~/Maildir
mailbox_idle_check_interval = 1 secs
protocol imap {{
  mail_max_userip_connections = 50
  {capability}
}}
service imap-login {{
  chroot =
  inet_listener imap {{
    listen = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service anvil {{
  chroot =
}}
"""


def _group(user: str) -> str:
    return grp.getgrgid(pwd.getpwnam(user).pw_gid).gr_name


class Dovecot:
    """One Dovecot instance; ``start``/``stop`` may be called repeatedly (same port, same mail).

    ``capabilities`` replaces the advertised IMAP capability list, e.g. to play a server
    without IDLE or MOVE.
    """

    host = "127.0.0.1"

    def __init__(
        self,
        *,
        user: str = "support",
        password: str = "secret",
        capabilities: Sequence[str] | None = None,
    ) -> None:
        self.user = user
        self.password = password
        self.port = free_port()
        self.run_as = "nobody" if os.geteuid() == 0 else pwd.getpwuid(os.getuid()).pw_name
        self.root = Path(tempfile.mkdtemp(prefix="helpline-dovecot-"))
        self.proc: subprocess.Popen[bytes] | None = None
        capability = f"imap_capability = {' '.join(capabilities)}" if capabilities else ""
        config = _config_24 if dovecot_version() >= (2, 4) else _config_23
        self.conf = self.root / "dovecot.conf"
        self.conf.write_text(config(self.root, self.port, self.run_as, capability))
        (self.root / "passwd").write_text(f"{user}:{{PLAIN}}{password}\n")
        (self.root / "home").mkdir()
        if os.geteuid() == 0:
            entry = pwd.getpwnam(self.run_as)
            for path in (self.root, self.root / "home", self.root / "passwd", self.conf):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        self.root.chmod(0o755)

    # -- process ------------------------------------------------------------------------------

    def start(self, timeout: float = 10.0) -> None:
        assert self.proc is None, "already running"
        self.proc = subprocess.Popen(
            [DOVECOT, "-F", "-c", str(self.conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            user=self.run_as if os.geteuid() == 0 else None,
            group=_group(self.run_as) if os.geteuid() == 0 else None,
            extra_groups=[] if os.geteuid() == 0 else None,
            start_new_session=True,  # a Ctrl-C in the test run does not reach it twice
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                self.proc = None
                raise RuntimeError(f"dovecot exited at start: {err}\n{self.log()}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection((self.host, self.port), timeout=0.2) as sock,
            ):
                if sock.recv(100).startswith(b"* OK"):
                    return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"dovecot did not listen on {self.port}:\n{self.log()}")

    def stop(self, *, graceful: bool = False) -> None:
        """Stop the server and wait until it is gone.

        By default the whole process group is killed at once: the server "goes away" (clients
        see EOF, no BYE) and tests don't wait the second a graceful shutdown takes.
        """
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        if graceful:
            proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)
        # Sessions can outlive the master for a moment; a server that went away has none.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)
        if proc.stderr:
            proc.stderr.close()
        # A session killed while it held the Maildir's dotlock (dovecot-uidlist.lock) leaves
        # it behind, and the next server waits minutes for it to turn stale: as a restarted
        # server after a crash would, once an admin or its start script cleared it.
        for lock in (self.root / "home").rglob("*.lock"):
            lock.unlink(missing_ok=True)

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def log(self) -> str:
        path = self.root / "dovecot.log"
        return path.read_text(errors="replace") if path.exists() else ""

    # -- the mailbox, as another client sees it -----------------------------------------------

    def settings(self, **overrides: Any) -> ImapMailboxSettings:
        values: dict[str, Any] = {
            "name": "support",
            "host": self.host,
            "port": self.port,
            "username": self.user,
            "ssl": False,
            "poll_seconds": 0.2,
        }
        return ImapMailboxSettings(**{**values, **overrides})

    @contextlib.contextmanager
    def client(self) -> Iterator[IMAPClient]:
        client = self._login()
        try:
            yield client
        finally:
            with contextlib.suppress(Exception):
                client.logout()

    def _login(self, attempts: int = 4) -> IMAPClient:
        """A logged-in test client. Retried: right after a (re)start, on a busy machine,
        Dovecot's auth process can take longer than one socket timeout to answer."""
        for attempt in range(attempts):
            try:
                client = IMAPClient(self.host, port=self.port, ssl=False, timeout=15)
                client.login(self.user, self.password)
                return client
            except (OSError, IMAPClient.Error):
                if attempt == attempts - 1:
                    raise
                time.sleep(0.5 * (attempt + 1))
        raise AssertionError("unreachable")

    def append(self, raw: bytes, folder: str = "INBOX", flags: Sequence[str] = ()) -> int:
        """Deliver a message into ``folder`` (created if missing); returns its UID."""
        with self.client() as client:
            if not client.folder_exists(folder):
                client.create_folder(folder)
            response = client.append(folder, raw, flags=tuple(flags))
        # "[APPENDUID <uidvalidity> <uid>] Append completed." (UIDPLUS)
        match = re.search(rb"APPENDUID \d+ (\d+)", response)
        return int(match.group(1)) if match else 0

    def flags(self, folder: str = "INBOX") -> dict[int, set[str]]:
        """UID -> flags of every message in ``folder``."""
        with self.client() as client:
            if not client.folder_exists(folder):
                return {}
            client.select_folder(folder, readonly=True)
            found = client.fetch("1:*", ["FLAGS"]) if client.search() else {}
        return {uid: {f.decode() for f in data[b"FLAGS"]} for uid, data in found.items()}

    def folders(self) -> list[str]:
        with self.client() as client:
            return sorted(name for _flags, _sep, name in client.list_folders())

    def uidvalidity(self, folder: str = "INBOX") -> int:
        with self.client() as client:
            return int(client.folder_status(folder, [b"UIDVALIDITY"])[b"UIDVALIDITY"])

    def recreate(self, folder: str) -> None:
        """Delete and create ``folder`` again: a new UIDVALIDITY, all old UIDs void."""
        with self.client() as client:
            if client.folder_exists(folder):
                client.delete_folder(folder)
            client.create_folder(folder)


@contextlib.contextmanager
def running_dovecot(capabilities: Sequence[str] | None = None) -> Iterator[Dovecot]:
    """A started server, removed (processes and files) on exit."""
    if not Path(DOVECOT).exists():
        pytest.fail("dovecot is not installed (.ci/run installs dovecot-imapd)")
    server = Dovecot(capabilities=capabilities)
    try:
        server.start()
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def dovecot() -> Iterator[Dovecot]:
    with running_dovecot() as server:
        yield server
