"""irctest controller for linechat's IRC listener.

irctest (progval/irctest, vendored read-only beside the repository) loads this module by name:

    cd ../shared/vendor/irctest
    PYTHONPATH=<repo>/tests/irctest python -m pytest --controller linechat_controller ...

`scripts/irctest.sh` (`make irctest`) does that for you, with the agreed subset and markers.

For every test, irctest asks for a free port and calls `run()`; this controller starts the
linechat binary on that port with an IRC listener only, and `wait_for_port()` returns once the
port accepts and answers `QUIT` (irctest's own probe). The binary is `$LINECHAT_BIN`, default
`target/release/linechat` under the repository root.

What linechat claims to support is declared in ONE place below ("WHAT LINECHAT DECLARES").
irctest uses it to tell a missing feature from a broken one: a test for an undeclared capability
or behaviour is skipped when the server refuses it; a declared one that is refused fails. Edit that
block as features land; `python tests/irctest/linechat_controller.py --show` prints it, and
`--check` starts the binary once and reports whether it serves IRC.
"""

from __future__ import annotations

import os
from pathlib import Path
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from typing import Dict, List, Optional, Set, Tuple, Type, Union

from irctest import patma
from irctest.basecontrollers import (
    BaseServerController,
    DirectoryBasedController,
    ProcessStopped,
)
from irctest.runner import NotImplementedByController
from irctest.specifications import Capabilities, OptionalBehaviors

REPO_ROOT = Path(__file__).resolve().parents[2]

# ======================================================================================
# WHAT LINECHAT DECLARES
#
# The contract is ../shared/PROTOCOL.md ("Version 2" -> "IRC"). Entries marked REQUIRED are
# features the contract says the IRC listener has; declaring them means a refusal FAILS the test
# (as it should) instead of skipping it. Entries marked LATER are not promised yet (or only once
# accounts exist): leaving them out means irctest skips those tests when linechat refuses them.
# Move an entry from LATER to declared the day it lands.
# ======================================================================================

SOFTWARE_NAME = "linechat"

# IRCv3 capabilities (irctest.specifications.Capabilities).
CAPABILITIES = frozenset(
    {
        Capabilities.SERVER_TIME,  # REQUIRED
        Capabilities.MESSAGE_TAGS,  # REQUIRED
        Capabilities.ECHO_MESSAGE,  # REQUIRED
        Capabilities.MULTI_PREFIX,  # REQUIRED
        Capabilities.BATCH,  # REQUIRED
        Capabilities.AWAY_NOTIFY,  # REQUIRED
        Capabilities.ACCOUNT_TAG,  # issue 15
        Capabilities.ACCOUNT_NOTIFY,  # issue 15
        # Capabilities.EXTENDED_JOIN,     # LATER: not in the contract
        # Capabilities.LABELED_RESPONSE,  # LATER: not in the contract
        # Capabilities.SETNAME,           # LATER: not in the contract
        # Capabilities.EXTENDED_MONITOR, MULTILINE, READ_MARKER, MESSAGE_REDACTION, STS: no
    }
)
# (cap-notify and draft/chathistory are REQUIRED too, but irctest has no enum entry for them:
# its cap.py and chathistory.py tests find out from CAP LS.)

# SASL PLAIN (issue 15). irctest's SASL and account-tag tests are marked `services`: they
# register accounts through the controller (`registerUser`, below), which linechat does over its
# own line protocol, since accounts are built in rather than a separate NickServ.
SUPPORTED_SASL_MECHANISMS: Set[str] = {"PLAIN"}

# Strict Transport Security: not planned.
SUPPORTS_STS = False

# Optional behaviours (irctest.specifications.OptionalBehaviors). Declared = must work.
OPTIONAL_BEHAVIORS = frozenset(
    {
        OptionalBehaviors.MULTI_JOIN,  # REQUIRED: "JOIN (several channels, JOIN 0)"
        # OptionalBehaviors.MULTI_PRIVMSG,        # LATER: not in the contract
        OptionalBehaviors.MULTI_NAMES_COMMAND,  # NAMES #a,#b (TARGMAX NAMES:10), one 366
        OptionalBehaviors.MULTI_KICK,  # KICK #a,#b x,y (TARGMAX KICK:4), one KICK line each
        # OptionalBehaviors.CAP_REQ_MINUS,        # LATER: not in the contract
        # OptionalBehaviors.BAN_EXCEPTION_MODE, INVITE_EXCEPTION_MODE, INVITE_LIST,
        # INVITE_OVERRIDES_LIMIT, NO_CTCP, SASL_AFTER_REGISTRATION, SASL_REAUTHENTICATION,
        # ELIST_*: LATER
    }
)

# RPL_ISUPPORT (005) tokens that must appear, with their value (patma.ANYSTR = any value,
# None = a token without a value). Checked by isupport.py::testValues.
ISUPPORT: Dict[str, Union[str, patma.Operator, None]] = {
    "CASEMAPPING": "ascii",  # REQUIRED
    "CHANTYPES": "#",  # REQUIRED
    "NICKLEN": patma.ANYSTR,  # REQUIRED
    "CHANNELLEN": patma.ANYSTR,  # REQUIRED
    "TOPICLEN": patma.ANYSTR,  # REQUIRED
    "PREFIX": patma.ANYSTR,  # REQUIRED
    "CHANMODES": patma.ANYSTR,  # REQUIRED
    "NETWORK": patma.ANYSTR,  # REQUIRED
    "WHOX": None,  # REQUIRED: "WHO with WHOX"
}

# Extended ban for muting (e.g. "m" as in +b m:nick!*@*): linechat has none.
EXTBAN_MUTE_CHAR: Optional[str] = None

# Transports irctest may ask for. Flip to True when the listener exists; run() then opens it.
TLS_LISTENER = False  # irctest `ssl = True` tests: --listen ircs://... --tls-cert --tls-key
WEBSOCKET_LISTENER = True  # irctest websocket tests: --listen http://... (ws:// at /)

# ======================================================================================
# HOW LINECHAT IS STARTED
# ======================================================================================

# irctest's tests expect replies to come from this server name (e.g. PONG My.Little.Server).
SERVER_NAME = "My.Little.Server"

# Flags every test run gets, on top of --listen and --server-name:
BASE_ARGS = [
    "--rate-limit", "0",  # flood control off: irctest sends bursts and expects prompt replies
    "--idle-timeout", "0",  # no idle disconnects (or PINGs) in the middle of a test
    "--register-timeout", "60",  # explicit, so a changed default cannot cut a slow test short
    "--shutdown-grace", "1",  # kill() sends SIGTERM with clients still connected: be quick
    "--oper", "operuser:operpassword",  # the credentials irctest's WHO tests OPER up with
]
# With `run_services` (irctest's tests that register accounts): a data directory for the
# accounts, a line-protocol listener that `registerUser` registers through, and the shortest
# password the suite registers with (`bar`, in the re-authentication tests), below linechat's
# default of 8.
SERVICES_ARGS = ["--min-password-length", "3"]
# More flags without editing this file: LINECHAT_IRCTEST_ARGS="--history 0 --foo bar".
EXTRA_ARGS_ENV = "LINECHAT_IRCTEST_ARGS"

# How long a start may take before the test fails with linechat's log in the message.
START_TIMEOUT_SECS = 20.0

LOG_TAIL_LINES = 30


def _own_group_and_die_with_parent() -> None:
    """In the child before exec: its own process group (as irctest's execute() would give it, so
    kill() can signal the group), and SIGTERM when the test process dies, so a pytest killed
    by the run's time limit leaves no linechat behind."""
    os.setsid()
    try:
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def linechat_bin() -> Path:
    """`$LINECHAT_BIN` (relative paths are taken from the repository root), else the release
    build."""
    configured = os.environ.get("LINECHAT_BIN")
    path = Path(configured) if configured else Path("target/release/linechat")
    return path if path.is_absolute() else REPO_ROOT / path


class LinechatController(BaseServerController, DirectoryBasedController):
    software_name = SOFTWARE_NAME
    supported_sasl_mechanisms = SUPPORTED_SASL_MECHANISMS
    supports_sts = SUPPORTS_STS
    capabilities = CAPABILITIES
    optional_behaviors = OPTIONAL_BEHAVIORS
    isupport = ISUPPORT
    extban_mute_char = EXTBAN_MUTE_CHAR
    nickserv = "NickServ"  # none: accounts are built in (registerUser uses the line protocol)
    _port_wait_interval = 0.02
    log_path: Optional[Path] = None
    # The line-protocol listener `registerUser` registers through (only with run_services).
    line_port: Optional[int] = None

    def get_hostname_and_port(self) -> Tuple[str, int]:
        # irctest picks ports by binding "" (0.0.0.0) and hands that host to both the server and
        # its clients. Listen on loopback instead: the tests connect to the same address we bind.
        (_any, port) = super().get_hostname_and_port()
        return ("127.0.0.1", port)

    def command(
        self,
        hostname: str,
        port: int,
        *,
        password: Optional[str] = None,
        ssl: bool = False,
        websocket: Optional[Tuple[str, int]] = None,
        services: Optional[Tuple[Path, int]] = None,
    ) -> List[str]:
        """The command line for one server; kept separate so `--show` can print it."""
        scheme = "ircs" if ssl else "irc"
        args = [
            str(linechat_bin()),
            "--listen", f"{scheme}://{hostname}:{port}",
            "--server-name", SERVER_NAME,
            *BASE_ARGS,
        ]
        if ssl:
            args += ["--tls-cert", str(self.pem_path), "--tls-key", str(self.key_path)]
        if websocket is not None:
            args += ["--listen", f"http://{websocket[0]}:{websocket[1]}"]
        if password:
            args += ["--server-password", password]
        if services is not None:
            (data_dir, line_port) = services
            args += ["--data-dir", str(data_dir), "--listen", f"line://{hostname}:{line_port}"]
            args += SERVICES_ARGS
        args += shlex.split(os.environ.get(EXTRA_ARGS_ENV, ""))
        return args

    def run(
        self,
        hostname: str,
        port: int,
        *,
        password: Optional[str],
        ssl: bool,
        run_services: bool,
        faketime: Optional[str],
        websocket_hostname: Optional[str],
        websocket_port: Optional[int],
    ) -> None:
        if ssl and not TLS_LISTENER:
            raise NotImplementedByController("TLS (ircs:// listener)")
        websocket = None
        if websocket_hostname is not None or websocket_port is not None:
            if not WEBSOCKET_LISTENER:
                raise NotImplementedByController("Websocket")
            assert websocket_hostname is not None and websocket_port is not None
            websocket = (websocket_hostname, websocket_port)
        assert self.proc is None
        binary = linechat_bin()
        if not os.access(binary, os.X_OK):
            raise RuntimeError(
                f"linechat binary not found at {binary}: run `cargo build --release` or set "
                "LINECHAT_BIN"
            )
        self.port = port
        self.hostname = hostname
        self.port_open = False
        self.create_config()
        assert self.directory
        if ssl:
            self.gen_ssl()
        services = None
        self.line_port = None
        if run_services:
            (_any, self.line_port) = super().get_hostname_and_port()
            services = (self.directory / "data", self.line_port)

        faketime_cmd: List[str] = []
        if faketime and shutil.which("faketime"):
            faketime_cmd = ["faketime", "-f", faketime]
            self.faketime_enabled = True

        cmd = faketime_cmd + self.command(
            hostname, port, password=password, ssl=ssl, websocket=websocket, services=services
        )
        self._cmd = cmd
        env = dict(os.environ, RUST_LOG=os.environ.get("RUST_LOG", "info"))
        if self.debug_mode:
            # IRCTEST_DEBUG_LOGS=1: irctest streams the server's output into the test's output.
            self.log_path = None
            self.proc = self.execute(
                cmd, proc_name="linechat", env=env, preexec_fn=_own_group_and_die_with_parent
            )
        else:
            self.log_path = self.directory / "linechat.log"
            with self.log_path.open("wb") as log:
                self.proc = self.execute(
                    cmd,
                    proc_name="linechat",
                    env=env,
                    preexec_fn=_own_group_and_die_with_parent,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                )

    def wait_for_services(self) -> None:
        """Accounts are built in: they are up once the line listener accepts, which opens with
        the IRC one."""
        self.wait_for_port()
        assert self.line_port is not None
        self._wait_until_accepts(self.line_port, "its line listener")

    def registerUser(self, case, username: str, password: Optional[str] = None) -> None:  # type: ignore[no-untyped-def]
        """Registers `username` with `password` the way a netcat user would: the nickname at the
        prompt, then `/register`. The IRC tests then prove it with SASL PLAIN or PASS."""
        if not case.run_services:
            raise ValueError("Attempted to register a nick, but `run_services` is not True.")
        assert password and self.line_port is not None
        self.wait_for_services()
        with socket.create_connection((self.hostname, self.line_port), timeout=5.0) as s:
            reader = s.makefile("rb")
            prompt = reader.read(len(b"Please enter your nickname: "))
            assert prompt == b"Please enter your nickname: ", prompt
            s.sendall(f"{username}\n".encode())
            _read_until(reader, f"Welcome to the chat, {username}!")
            s.sendall(f"/register {password}\n".encode())
            reply = _read_until(reader, f"Your nickname {username} is registered.", "Error: ")
            assert reply.startswith("Your nickname"), f"/register {username}: {reply}"
            s.sendall(b"/quit\n")

    # --- failures that say why -------------------------------------------------------

    def log_tail(self) -> str:
        if self.log_path is None or not self.log_path.exists():
            return "(linechat's output is shown above: IRCTEST_DEBUG_LOGS=1)"
        lines = self.log_path.read_text(errors="replace").splitlines()
        if not lines:
            return "(linechat printed nothing)"
        return "\n".join(lines[-LOG_TAIL_LINES:])

    def check_is_alive(self) -> None:
        try:
            super().check_is_alive()
        except ProcessStopped as e:
            raise ProcessStopped(
                f"linechat exited ({e}); command: {shlex.join(self._cmd)}\n"
                f"--- linechat's output ---\n{self.log_tail()}"
            ) from None

    def wait_for_port(self) -> None:
        """irctest's probe (connect, `QUIT :chkport`, read until the server answers or closes),
        bounded: a server that never opens the port fails the test after START_TIMEOUT_SECS
        with its log, instead of irctest's 60 s and a bare ConnectionRefusedError."""
        if self.port_open:
            return
        self._wait_until_accepts(self.port, "connections")
        # The port accepts: let irctest do its QUIT probe (it needs the port open already, so
        # its own 60 s refused-loop cannot start).
        super().wait_for_port()

    def _wait_until_accepts(self, port: int, what: str) -> None:
        """Until `port` accepts a connection, failing after START_TIMEOUT_SECS with the log."""
        deadline = time.monotonic() + START_TIMEOUT_SECS
        while True:
            self.check_is_alive()
            try:
                with socket.create_connection((self.hostname, port), timeout=1.0):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"linechat did not accept {what} on {self.hostname}:{port} "
                        f"within {START_TIMEOUT_SECS:.0f} s; command: {shlex.join(self._cmd)}\n"
                        f"--- linechat's output ---\n{self.log_tail()}"
                    ) from None
                time.sleep(self._port_wait_interval)


def _read_until(reader, *starts: str) -> str:  # type: ignore[no-untyped-def]
    """The first line from `reader` that starts with one of `starts` (5 s socket timeout)."""
    while True:
        line = reader.readline()
        if not line:
            raise ConnectionError(f"linechat closed the line listener before {starts!r}")
        text = line.decode(errors="replace").rstrip("\r\n")
        if text.startswith(starts):
            return text


def get_irctest_controller_class() -> Type[LinechatController]:
    return LinechatController


# --------------------------------------------------------------------------------------
# Command line: --show (the declaration and the command), --check (start it once).
# --------------------------------------------------------------------------------------


def _show() -> None:
    c = LinechatController.__new__(LinechatController)
    c.pem_path = Path("CERT.pem")  # type: ignore[attr-defined]
    c.key_path = Path("KEY.pem")  # type: ignore[attr-defined]
    print("command:     ", shlex.join(LinechatController.command(c, "127.0.0.1", 6667)))
    print("software:    ", SOFTWARE_NAME)
    print("capabilities:", ", ".join(sorted(x.value for x in CAPABILITIES)) or "-")
    print("behaviours:  ", "; ".join(sorted(x.value for x in OPTIONAL_BEHAVIORS)) or "-")
    print("sasl:        ", ", ".join(sorted(SUPPORTED_SASL_MECHANISMS)) or "-")
    print("sts:         ", SUPPORTS_STS)
    print("isupport:    ", ", ".join(f"{k}={v}" if v else k for k, v in ISUPPORT.items()))
    print("extban mute: ", EXTBAN_MUTE_CHAR or "-")
    print("tls/ws:      ", TLS_LISTENER, WEBSOCKET_LISTENER)


def _check() -> int:
    """Start linechat once the way every test does; exit 0 if it served IRC, 2 if not."""
    from irctest.basecontrollers import TestCaseControllerConfig

    c = LinechatController(TestCaseControllerConfig())
    c.openssl_bin = "openssl"
    (host, port) = c.get_hostname_and_port()
    started = time.monotonic()
    try:
        c.run(
            host,
            port,
            password=None,
            ssl=False,
            run_services=False,
            faketime=None,
            websocket_hostname=None,
            websocket_port=None,
        )
        c.wait_for_port()
        # One registration, to see that it is IRC and not another protocol on that port.
        with socket.create_connection((host, port), timeout=5.0) as s:
            s.sendall(b"NICK check\r\nUSER check 0 * :check\r\n")
            got = b""
            until = time.monotonic() + 5.0
            while b" 001 " not in got and time.monotonic() < until:
                try:
                    chunk = s.recv(4096)
                except socket.timeout:
                    break
                if not chunk:
                    break
                got += chunk
            if b" 001 " not in got:
                print(
                    f"linechat-check: FAIL: port {port} accepts, but NICK/USER got no 001 "
                    f"(RPL_WELCOME) within 5 s; it answered: {got[:300]!r}",
                    file=sys.stderr,
                )
                return 2
        print(
            f"linechat-check: ok: {linechat_bin()} serves IRC on {host}:{port} "
            f"(started in {time.monotonic() - started:.2f} s)"
        )
        return 0
    except (ProcessStopped, TimeoutError, RuntimeError, NotImplementedByController) as e:
        print(f"linechat-check: FAIL: {e}", file=sys.stderr)
        return 2
    finally:
        c.kill()


if __name__ == "__main__":
    if sys.argv[1:] == ["--show"]:
        _show()
    elif sys.argv[1:] == ["--check"]:
        sys.exit(_check())
    else:
        print(f"usage: {sys.argv[0]} --show | --check", file=sys.stderr)
        sys.exit(64)
