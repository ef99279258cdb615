"""A private multi-node Ray cluster on this machine, with token authentication.

Each node is a ``ray start --block`` in its own process group, on the loopback address, with
free ports and the cluster's own temporary folder, so it coexists with the session's
in-process cluster (``tests/conftest.py``) and with any other Ray on the machine. The
cluster has its own token: a file named by ``RAY_AUTH_TOKEN_PATH`` (which Ray reads before
``~/.ray/auth_token``), so the user's token is neither read nor overwritten. Nodes, their
workers and drivers (with :meth:`Cluster.driver_env`) run with ``RAY_AUTH_MODE=token`` and
that path.

``ray stop`` would stop every Ray on the machine, so teardown kills this cluster's processes
only: every process whose environment carries the cluster's marker (nodes, the workers
their raylets start, drivers), however it was started and whoever its parent is now.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tests.faults.checks import ROOT

MARKER = "ADVGRID_TEST_RAY_CLUSTER"
START_TIMEOUT_S = 120.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Node:
    """One ``ray start --block`` process (the leader of its process group) and its log."""

    proc: subprocess.Popen
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@dataclass
class Cluster:
    """Nodes started with :meth:`start_node`; ``address`` is the head's GCS address."""

    root: Path
    port: int
    env: dict[str, str]
    nodes: list[Node] = field(default_factory=list)
    dashboard: str = ""  # the head's job server, http://127.0.0.1:PORT
    client: str = ""  # the head's Ray client server, ray://127.0.0.1:PORT

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def driver_env(self) -> dict[str, str]:
        """What a driver of this cluster adds to its environment: the token (mode and file),
        the address (``RAY_ADDRESS`` would override any other address given to Ray) and the
        marker (so teardown finds it too). A ``RAY_AUTH_TOKEN`` in the driver's own
        environment would take precedence over the file: the test runner has none."""
        keep = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH", MARKER, "PYTHONPATH")
        return {**{k: self.env[k] for k in keep}, "RAY_ADDRESS": self.address}

    def node_id(self, node: Node) -> str:
        """The Ray node id of ``node``, from its raylet's command line."""
        for arg in _cmdline(self.raylet_pid(node)).split(b"\0"):
            if arg.startswith(b"--node_id="):
                return arg.removeprefix(b"--node_id=").decode()
        raise AssertionError(f"no --node_id on the raylet of {node.proc.args}")

    def start_node(self, *args: str, head: bool = False) -> Node:
        """``ray start ARGS --block``; returns once the node says it is up."""
        dashboard_port, client_port = free_port(), free_port()
        if head:
            self.dashboard = f"http://127.0.0.1:{dashboard_port}"
            self.client = f"ray://127.0.0.1:{client_port}"
        where = (
            [
                "--head",
                f"--port={self.port}",
                f"--temp-dir={self.root / 'ray'}",
                f"--ray-client-server-port={client_port}",
                f"--dashboard-port={dashboard_port}",
            ]
            if head
            else [f"--address={self.address}"]
        )
        log = self.root / f"node{len(self.nodes)}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [
                    str(Path(sys.executable).with_name("ray")),
                    "start",
                    *where,
                    "--node-ip-address=127.0.0.1",
                    f"--dashboard-agent-listen-port={free_port()}",
                    f"--metrics-export-port={free_port()}",
                    "--disable-usage-stats",
                    *args,
                    "--block",
                ],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, killed as one
            )
        node = Node(proc, log)
        self.nodes.append(node)
        deadline = time.monotonic() + START_TIMEOUT_S
        while "Ray runtime started" not in node.output():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"ray start {' '.join(args)} did not come up:\n{node.output()}")
            time.sleep(0.2)
        return node

    def raylet_pid(self, node: Node) -> int:
        """The raylet of ``node`` (a child of its ``ray start``)."""
        pids = [p for p in _children(node.proc.pid) if b"/raylet/raylet" in _cmdline(p)]
        assert len(pids) == 1, (pids, node.output())
        return pids[0]

    def kill_node(self, node: Node, *, mid_cell: tuple[int, str] | None = None) -> bool:
        """SIGKILL the node as a machine would die: its process group and every process under
        it, the cell workers too (the raylet puts each worker in a group of its own).

        With ``mid_cell=(pid, title)``, only if that worker still runs that cell when the
        signals go out (checked after everything else is ready): returns whether it did.
        """
        victims = _descendants(node.proc.pid)
        if mid_cell is not None and _title(mid_cell[0]) != mid_cell[1]:
            return False
        _signal(os.killpg, node.proc.pid)
        for pid in victims:
            _signal(os.kill, pid)
        node.proc.wait()
        return True

    def processes(self) -> list[int]:
        """Every live process of this cluster (by the marker in its environment)."""
        needle = f"{MARKER}={self.env[MARKER]}\0".encode()
        own = os.getpid()
        found = []
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit() or int(proc.name) == own:
                continue
            try:
                environ = (proc / "environ").read_bytes()
            except OSError:  # gone, or not ours to read
                continue
            stat = _stat(int(proc.name))
            if needle in environ and stat is not None and stat[1] != b"Z":  # zombies are dead
                found.append(int(proc.name))
        return found

    def teardown(self) -> None:
        """SIGKILL every process of the cluster until none is left; remove its folder."""
        deadline = time.monotonic() + 30
        while pids := self.processes():
            if time.monotonic() > deadline:
                raise RuntimeError(f"Ray processes {pids} survived SIGKILL")
            for pid in pids:
                _signal(os.kill, pid)
            time.sleep(0.2)
        for node in self.nodes:
            node.proc.wait()
        shutil.rmtree(self.root, ignore_errors=True)


def _signal(kill: Callable[[int, int], None], pid: int) -> None:
    """SIGKILL ``pid`` (a process or a group, as ``kill`` is), unless it is already gone."""
    with contextlib.suppress(ProcessLookupError):
        kill(pid, signal.SIGKILL)


def cell_workers_of(raylet: int) -> dict[int, str]:
    """``{pid: title}`` of the workers of ``raylet`` running a cell: Ray names a worker
    process after its task, ``advgrid:KIND:KEY`` (``…:KEY+N`` for a group of cells)."""
    titles = {pid: _title(pid) for pid in _children(raylet)}
    return {pid: t for pid, t in titles.items() if t.startswith("advgrid:")}


def _title(pid: int) -> str:
    """A Ray worker's title without its ``ray::`` prefix ("" for any other process)."""
    first = _cmdline(pid).split(b"\0")[0].decode(errors="replace")
    return first.removeprefix("ray::") if first.startswith("ray::") else ""


@contextmanager
def ray_cluster(*head_args: str) -> Iterator[Cluster]:
    """A head started with ``ray start --head HEAD_ARGS``; more nodes via ``start_node``.

    Always torn down, whatever the test did; the token lives in the cluster's folder.
    """
    # Ray's socket paths must stay under 108 bytes: a short folder, not pytest's tmp_path
    short = "/tmp" if Path("/tmp").is_dir() else None
    root = Path(tempfile.mkdtemp(prefix="advgrid-ray-", dir=short))
    token = root / "auth_token"
    token.write_text(secrets.token_hex(32))
    token.chmod(0o600)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}  # no address, no auth
    env |= {
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN_PATH": str(token),
        MARKER: root.name,
        "PYTHONPATH": ROOT,  # workers import this checkout's tasks/
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    cluster = Cluster(root, free_port(), env)
    try:
        cluster.start_node(*head_args, head=True)
        yield cluster
    finally:
        cluster.teardown()


# ``advgrid run ARGS`` whose Ray executor also appends, for every result it collects, the
# cell id and the worker's ``started_at``/``ended_at`` to the JSON-lines file RECORD: the
# times cells ran, seen from the workers (the index keeps times on the database clock only).
_RECORDING_RUN = """
import json, sys
from orchestrator.run import ray_executor as executors
from orchestrator.cli import main

record, args = sys.argv[1], sys.argv[2:]
poll = executors.RayExecutor.poll

def poll_and_record(self, timeout):
    outcomes = poll(self, timeout)
    with open(record, "a") as out:
        for o in outcomes:
            if o.result is not None:
                times = {k: o.result[k] for k in ("worker", "started_at", "ended_at")}
                out.write(json.dumps({"cell_id": o.cell_id, **times}) + "\\n")
    return outcomes

executors.RayExecutor.poll = poll_and_record
main(args, prog_name="advgrid")
"""


def start_recorded_run(
    study: Path, env: dict[str, str], record: Path, *args: str
) -> subprocess.Popen:
    """``advgrid run STUDY -q ARGS`` as :func:`tests.faults.checks.start_run` starts it, with
    each result's worker times appended to ``record``."""
    return subprocess.Popen(
        [sys.executable, "-c", _RECORDING_RUN, str(record), "run", str(study), "-q", *args],
        env={**os.environ, **env, "PYTHONPATH": ROOT},
        cwd=study.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def task_records(cluster: Cluster, prefix: str = "advgrid:") -> list[dict]:
    """Ray's own record (state API) of the cluster's tasks named ``PREFIX…``: name, state and
    the resources each asked for. (Their start times are not used: a worker's last task
    events are lost when its job ends before they are flushed.)

    Queried in a child process: this one may be connected to another cluster, with another
    token.
    """
    code = (
        "import json, sys\n"
        "from ray.util.state import list_tasks\n"
        f"tasks = list_tasks(address={cluster.address!r}, detail=True, limit=10000,\n"
        "                   raise_on_missing_output=False)\n"
        "json.dump([{'name': t.name, 'state': t.state, 'resources': t.required_resources}\n"
        f"           for t in tasks if t.name.startswith({prefix!r})], sys.stdout)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=cluster.env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return json.loads(out.stdout)


def _stat(pid: int) -> tuple[int, bytes] | None:
    """``(ppid, state)`` of ``pid``, or None if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()
    except OSError:
        return None
    return int(fields[1]), fields[0]


def _children(pid: int) -> list[int]:
    out = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and (st := _stat(int(proc.name))) and st[0] == pid:
            out.append(int(proc.name))
    return out


def _descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        kids = _children(todo.pop())
        out += kids
        todo += kids
    return out


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""
