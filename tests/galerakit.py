"""A MariaDB Galera cluster on loopback, for the Galera tests and benchmarks (and by hand).

Every node is a ``mariadbd --no-defaults`` of its own: its data directory under one base
directory (under /tmp), its own ports, nothing read from or written to /etc/mysql. Node ``i``
(0-based) of a cluster whose ports start at ``first_port`` (4400 by default) listens on

    first_port + 10*i      MySQL            (4400, 4410, 4420)
    first_port + 10*i + 1  Galera (gcomm)   (4401, 4411, 4421)
    first_port + 10*i + 2  IST              (4402, 4412, 4422)
    first_port + 10*i + 3  SST (rsync)      (4403, 4413, 4423)

No state transfer at start: one data directory is installed, copied to every node, and all of
them are given the same cluster state (a ``grastate.dat`` with one UUID at seqno 0); the first
node bootstraps with ``--wsrep-new-cluster`` and the others join with nothing to transfer. A node
killed with SIGKILL is started again the way systemd's ``galera_recovery`` does it: ``mariadbd
--wsrep-recover`` finds its last committed position, and it rejoins by IST from a donor's gcache
(rsync SST only if the gcache no longer holds what it missed).

``plain=True`` makes one server of the same binary and settings with wsrep off: the baseline
the Galera benchmark compares with.

From a shell (the nodes keep running in the background until ``down``):

    python tests/galerakit.py up   [--base /tmp/fsgalera] [--first-port 4400] [--nodes 3]
    python tests/galerakit.py status | kill N | start N | down   [--base ...]

Importable without pytest (``bench/`` uses it too); only the standard library and pymysql.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import pwd
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pymysql


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def _give_to_server_user(path: Path) -> None:
    if SERVER_USER == pwd.getpwuid(os.geteuid()).pw_name:
        return
    entry = pwd.getpwnam(SERVER_USER)
    for root, dirs, files in os.walk(path):
        for name in [root, *(os.path.join(root, d) for d in dirs), *(os.path.join(root, f) for f in files)]:
            os.chown(name, entry.pw_uid, entry.pw_gid, follow_symlinks=False)


MARIADBD = "/usr/sbin/mariadbd"
PROVIDER = "/usr/lib/galera/libgalera_smm.so"  # Debian's galera-4
DEFAULT_BASE = "/tmp/fsgalera"
DEFAULT_FIRST_PORT = 4400
PORTS_PER_NODE = 10
START_TIMEOUT = 90.0  # seconds for a node to be synced (a rejoin by IST included)
STOP_TIMEOUT = 60.0  # seconds for a node to shut down after SIGTERM
INSTALL_TIMEOUT = 120.0
# Small nodes: the machine has 2 cores and is shared. The failure detector is tightened (Galera's
# defaults wait 5-15 s before evicting a dead node; on loopback 2-4 s is plenty) so that a test
# of a node's death does not spend most of its time waiting.
PROVIDER_OPTIONS = (
    "gcache.size=128M",
    "evs.keepalive_period=PT0.5S",
    "evs.inactive_check_period=PT0.5S",
    "evs.suspect_timeout=PT2S",
    "evs.inactive_timeout=PT4S",
    "evs.install_timeout=PT4S",
    "pc.recovery=FALSE",
)
SERVER_VARIABLES: dict[str, object] = {
    "innodb_buffer_pool_size": "64M",
    "innodb_log_file_size": "32M",
    "max_connections": 200,
    "binlog_format": "ROW",  # what Galera replicates; the binary log itself stays off
    "default_storage_engine": "InnoDB",
    "innodb_autoinc_lock_mode": 2,  # Galera's requirement: interleaved, no table-level AUTO-INC lock
    "wsrep_slave_threads": 2,
    "wsrep_sst_method": "rsync",  # only if IST cannot serve a rejoining node
}
# As root, the servers run as ``mysql`` (Debian's mariadb-server creates it): the rsync SST's daemon
# would otherwise drop to ``nobody`` and find the data directories closed to it.
SERVER_USER = "mysql" if os.geteuid() == 0 and _user_exists("mysql") else pwd.getpwuid(os.geteuid()).pw_name
_RECOVERED = re.compile(r"WSREP: Recovered position:\s*([0-9a-f-]{36}):(-?\d+)")


@dataclasses.dataclass
class Node:
    """One mariadbd of the cluster: its ports, data directory and process."""

    index: int
    base: Path
    first_port: int
    proc: subprocess.Popen[bytes] | None = None

    @property
    def port(self) -> int:
        return self.first_port + PORTS_PER_NODE * self.index

    @property
    def gcomm_port(self) -> int:
        return self.port + 1

    @property
    def name(self) -> str:
        return f"node{self.index + 1}"

    @property
    def dir(self) -> Path:
        return self.base / self.name

    @property
    def datadir(self) -> Path:
        return self.dir / "data"

    @property
    def errlog(self) -> Path:
        return self.dir / "mariadbd.err"

    @property
    def pidfile(self) -> Path:
        return self.dir / "mariadbd.pid"

    def pid(self) -> int | None:
        """The running server's pid (from our process handle, else its pid file), or None."""
        if self.proc is not None:
            return self.proc.pid if self.proc.poll() is None else None
        try:
            pid = int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if _is_our_mariadbd(pid, self.datadir) else None

    def connect(self, **extra: Any) -> pymysql.connections.Connection:
        return pymysql.connect(
            host="127.0.0.1", port=self.port, user="root", autocommit=True, connect_timeout=2, **extra
        )

    def status(self) -> dict[str, str]:
        """The node's wsrep status variables (empty if it does not answer)."""
        try:
            conn = self.connect()
        except pymysql.MySQLError:
            return {}
        try:
            with conn.cursor() as cur:
                cur.execute("SHOW GLOBAL STATUS LIKE 'wsrep%%'")
                return {str(name): str(value) for name, value in cur.fetchall()}
        except pymysql.MySQLError:
            return {}
        finally:
            conn.close()

    def answers(self) -> bool:
        try:
            self.connect().close()
        except pymysql.MySQLError:
            return False
        return True

    def synced(self) -> bool:
        status = self.status()
        return (
            status.get("wsrep_ready") == "ON"
            and status.get("wsrep_cluster_status") == "Primary"
            and status.get("wsrep_local_state_comment") == "Synced"
        )

    def errlog_tail(self, chars: int = 3000) -> str:
        try:
            return self.errlog.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no error log)"


def _is_our_mariadbd(pid: int, datadir: Path) -> bool:
    """Whether ``pid`` is a live mariadbd serving ``datadir`` (a stale pid file may name another)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            argv = handle.read().split(b"\0")
    except OSError:
        return False
    return bool(argv) and argv[0].endswith(b"mariadbd") and f"--datadir={datadir}".encode() in argv


class GaleraCluster:
    """``nodes`` Galera nodes under ``base``, ports from ``first_port`` (see the module docstring)."""

    def __init__(
        self,
        base: Path | str = DEFAULT_BASE,
        *,
        nodes: int = 3,
        first_port: int = DEFAULT_FIRST_PORT,
        cluster_name: str = "fastsched",
        plain: bool = False,
        **variables: object,
    ) -> None:
        self.plain = plain  # one node, wsrep off: the same server as a baseline (bench/)
        if plain and nodes != 1:
            raise ValueError("a plain server is one node")
        self.base = Path(base)
        self.first_port = first_port
        self.cluster_name = cluster_name
        self.variables = {**SERVER_VARIABLES, **variables}
        self.nodes = [Node(index, self.base, first_port) for index in range(nodes)]

    # --- set-up ---------------------------------------------------------------------------------
    def install(self) -> None:
        """Install the first node's data directory, bootstrap it alone once (so that InnoDB and
        grastate.dat record one cluster state), stop it, and give every other node a copy."""
        for tool in (MARIADBD, PROVIDER):
            if not os.path.exists(tool):
                raise RuntimeError(f"{tool} is missing: .ci/run installs mariadb-server and galera-4")
        for node in self.nodes:
            if node.dir.exists():
                shutil.rmtree(node.dir)
        first = self.nodes[0]
        first.dir.mkdir(parents=True)
        done = subprocess.run(
            [
                "mariadb-install-db", "--no-defaults", f"--user={SERVER_USER}", f"--datadir={first.datadir}",
                "--auth-root-authentication-method=normal", "--skip-test-db",
            ],
            capture_output=True, text=True, timeout=INSTALL_TIMEOUT, check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"mariadb-install-db failed:\n{done.stdout}\n{done.stderr}")
        _give_to_server_user(first.dir)
        if self.plain:
            return
        self.start_node(0, bootstrap=True)
        self.stop_node(0)
        for node in self.nodes[1:]:
            node.dir.mkdir(parents=True)
            # The gcache is recreated empty; gvwstate.dat would give the copy the first node's identity.
            shutil.copytree(
                first.datadir, node.datadir, symlinks=True,
                ignore=shutil.ignore_patterns("galera.cache", "gvwstate.dat", "*.sock", "*.pid"),
            )
            grastate = node.datadir / "grastate.dat"
            grastate.write_text(grastate.read_text().replace("safe_to_bootstrap: 1", "safe_to_bootstrap: 0"))
            _give_to_server_user(node.dir)

    def _argv(self, node: Node) -> list[str]:
        argv = [
            MARIADBD, "--no-defaults", f"--user={SERVER_USER}",
            f"--datadir={node.datadir}", f"--port={node.port}", "--bind-address=127.0.0.1",
            f"--socket={node.dir / 'mariadbd.sock'}", f"--pid-file={node.pidfile}",
            f"--log-error={node.errlog}",
        ]
        if not self.plain:
            argv += self._wsrep_argv(node)
        argv += [f"--{name.replace('_', '-')}={value}" for name, value in self.variables.items()]
        return argv

    def _wsrep_argv(self, node: Node) -> list[str]:
        gcomm = ",".join(f"127.0.0.1:{other.gcomm_port}" for other in self.nodes)
        options = ";".join(
            (
                f"gmcast.listen_addr=tcp://127.0.0.1:{node.gcomm_port}",
                f"ist.recv_addr=127.0.0.1:{node.port + 2}",
                *PROVIDER_OPTIONS,
            )
        )
        return [
            "--wsrep-on=ON", f"--wsrep-provider={PROVIDER}", f"--wsrep-cluster-name={self.cluster_name}",
            f"--wsrep-cluster-address=gcomm://{gcomm}", f"--wsrep-node-name={node.name}",
            f"--wsrep-node-address=127.0.0.1:{node.gcomm_port}",
            f"--wsrep-node-incoming-address=127.0.0.1:{node.port}",
            f"--wsrep-sst-receive-address=127.0.0.1:{node.port + 3}",
            f"--wsrep-provider-options={options}",
        ]

    # --- nodes ----------------------------------------------------------------------------------
    def start(self) -> None:
        """Start every node that is not running: the first bootstraps the cluster if none runs."""
        running = [node for node in self.nodes if node.pid() is not None]
        for node in self.nodes:
            if node.pid() is None:
                self.start_node(node.index, bootstrap=not running)
                running.append(node)

    def start_node(self, index: int, *, bootstrap: bool = False, wait: bool = True) -> None:
        """Start node ``index``; after a crash, recover its position first (as galera_recovery)."""
        node = self.nodes[index]
        if node.pid() is not None:
            raise RuntimeError(f"{node.name} is running already")
        argv = self._argv(node)
        saved = node.datadir / "grastate.dat"
        if saved.exists():  # else a data directory fresh from mariadb-install-db: no state yet
            grastate = saved.read_text()
            state = re.search(r"^uuid:\s*(\S+)\s*$", grastate, re.MULTILINE)
            seqno = re.search(r"^seqno:\s*(-?\d+)\s*$", grastate, re.MULTILINE)
            if state is None or seqno is None or seqno.group(1) == "-1":  # a crash: ask InnoDB
                position = self._recover(node, argv)
            else:  # a clean stop, or the copy install() gave the node
                position = f"{state.group(1)}:{seqno.group(1)}"
            argv.append(f"--wsrep-start-position={position}")
        if bootstrap and not self.plain:
            argv.append("--wsrep-new-cluster")
        env = {**os.environ, "PATH": "/usr/sbin:/usr/bin:/sbin:/bin:" + os.environ.get("PATH", "")}
        node.proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env=env, start_new_session=True,  # a Ctrl-C in the caller's terminal must not crash it
        )
        if wait:
            self.wait_synced(index)

    def _recover(self, node: Node, argv: Sequence[str]) -> str:
        log = node.dir / "recover.err"
        done = subprocess.run(
            [*[a for a in argv if not a.startswith("--log-error=")], f"--log-error={log}", "--wsrep-recover"],
            stdin=subprocess.DEVNULL, capture_output=True, timeout=START_TIMEOUT, check=False,
        )
        text = log.read_text(errors="replace") if log.exists() else ""
        found = _RECOVERED.findall(text)
        if done.returncode != 0 or not found:
            raise RuntimeError(f"{node.name}: --wsrep-recover found no position:\n{text[-3000:]}")
        state, seqno = found[-1]
        return f"{state}:{seqno}"

    def wait_synced(self, index: int, timeout: float = START_TIMEOUT) -> None:
        node = self.nodes[index]
        deadline = time.monotonic() + timeout
        while not (node.answers() if self.plain else node.synced()):
            if node.proc is not None and node.proc.poll() is not None:
                raise RuntimeError(f"{node.name} exited ({node.proc.returncode}):\n{node.errlog_tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{node.name} not synced within {timeout:g}s:\n{node.errlog_tail()}")
            time.sleep(0.1)

    def wait_cluster_size(self, size: int, timeout: float = START_TIMEOUT) -> None:
        """Wait until every running node sees a Primary component of ``size`` nodes."""
        deadline = time.monotonic() + timeout
        while True:
            running = [node for node in self.nodes if node.pid() is not None]
            statuses = [node.status() for node in running]
            if all(
                s.get("wsrep_cluster_size") == str(size) and s.get("wsrep_cluster_status") == "Primary"
                for s in statuses
            ):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"the cluster did not settle at {size} nodes within {timeout:g}s: {statuses}")
            time.sleep(0.1)

    def kill_node(self, index: int) -> None:
        """SIGKILL node ``index``: a crash (its grastate.dat is left at seqno -1)."""
        self._signal(index, signal.SIGKILL)

    def stop_node(self, index: int) -> None:
        """A clean shutdown of node ``index`` (SIGTERM; SIGKILL only if it hangs)."""
        self._signal(index, signal.SIGTERM)

    def _signal(self, index: int, signum: int) -> None:
        node = self.nodes[index]
        pid = node.pid()
        if pid is None:
            node.proc = None
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)
        deadline = time.monotonic() + STOP_TIMEOUT
        while _is_our_mariadbd(pid, node.datadir) and not _reaped(node):
            if time.monotonic() > deadline:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                deadline = time.monotonic() + STOP_TIMEOUT
            time.sleep(0.05)
        node.proc = None

    def stop(self) -> None:
        """Stop every node cleanly, the last one standing last (it then may bootstrap next time)."""
        for node in reversed(self.nodes):
            self.stop_node(node.index)

    # --- databases ------------------------------------------------------------------------------
    def database(self, password: str | None = None) -> tuple[str, str, str]:
        """A new database and a user owning it, created through the first running node (DDL and
        grants replicate): (database, user, password)."""
        name = "galera_" + secrets.token_hex(3)
        user = "u_" + secrets.token_hex(3)
        password = password or secrets.token_urlsafe(12)
        node = next(node for node in self.nodes if node.pid() is not None)
        conn = node.connect()
        try:
            with conn.cursor() as cur:
                cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
                cur.execute(f"CREATE USER '{user}'@'%%' IDENTIFIED BY %s", (password,))
                cur.execute(f"GRANT ALL ON `{name}`.* TO '{user}'@'%'")
        finally:
            conn.close()
        return name, user, password

    def dsn(self, database: str, user: str, password: str, nodes: Sequence[int] | None = None) -> str:
        """``mysql://user:pw@127.0.0.1:p1,127.0.0.1:p2,.../database``: the nodes in that order
        (all of them, from the first, by default)."""
        order = range(len(self.nodes)) if nodes is None else nodes
        hosts = ",".join(f"127.0.0.1:{self.nodes[i].port}" for i in order)
        auth = f"{urllib.parse.quote(user, safe='')}:{urllib.parse.quote(password, safe='')}"
        return f"mysql://{auth}@{hosts}/{database}"


def _reaped(node: Node) -> bool:
    """Reap our own child once it exited (else it lingers as a zombie that looks alive)."""
    return node.proc is not None and node.proc.poll() is not None


@contextlib.contextmanager
def galera_cluster(
    base: Path | str, *, first_port: int = DEFAULT_FIRST_PORT, plain: bool = False, **variables: object
) -> Iterator[GaleraCluster]:
    """A fresh 3-node cluster under ``base``, running; every node stopped at the end whatever happens.
    ``plain``: one server of the same binary and settings, wsrep off (a baseline)."""
    cluster = GaleraCluster(base, first_port=first_port, nodes=1 if plain else 3, plain=plain, **variables)
    cluster.stop()  # nodes a crashed earlier run left behind in the same place
    cluster.install()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="A MariaDB Galera cluster on loopback, for fastsched's tests.")
    parser.add_argument("command", choices=("up", "down", "status", "kill", "start"))
    parser.add_argument("node", nargs="?", type=int, help="kill/start: the node's number, 1-based")
    parser.add_argument("--base", default=DEFAULT_BASE, help=f"the cluster's directory (default {DEFAULT_BASE})")
    parser.add_argument("--first-port", type=int, default=DEFAULT_FIRST_PORT)
    parser.add_argument("--nodes", type=int, default=3)
    args = parser.parse_args(argv)
    cluster = GaleraCluster(args.base, nodes=args.nodes, first_port=args.first_port)
    if args.command in ("kill", "start") and not (args.node and 1 <= args.node <= args.nodes):
        parser.error(f"{args.command} needs a node number from 1 to {args.nodes}")
    if args.command == "up":
        cluster.stop()
        cluster.install()
        cluster.start()
    elif args.command == "down":
        cluster.stop()
    elif args.command == "kill":
        cluster.kill_node(args.node - 1)
    elif args.command == "start":
        others = any(node.pid() is not None for node in cluster.nodes)
        cluster.start_node(args.node - 1, bootstrap=not others)
    for node in cluster.nodes:
        status = node.status()
        state = status.get("wsrep_local_state_comment", "down")
        size = status.get("wsrep_cluster_size", "-")
        print(f"{node.name}: 127.0.0.1:{node.port} pid {node.pid() or '-'} {state} (cluster size {size})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
