"""A real two-node Ray cluster on loopback, started with the Ray CLI, for the multi-node executor tests
(imported as ``ray_cluster``: pytest puts this folder on sys.path).

Each node is one ``ray start --block`` process in its own process group and temp dir, so a test can kill
one node for good (its raylet, agents and worker processes) while the other runs on, and teardown stops
exactly the processes it started: never ``ray stop``, which would stop every Ray instance on the machine.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import edgelearn

LOOPBACK = "127.0.0.1"
"""The address every node registers under (``--node-ip-address``); free ports are picked on it."""

START_TIMEOUT_S = 120.0
"""Longest wait for a node to start (a loaded 2-core machine can take tens of seconds; the wait ends as soon
as ``ray start`` reports the node up)."""

POLL_S = 0.1
"""Sleep between checks of a condition being waited for."""

STARTED = "Ray runtime started"
"""What ``ray start`` logs once its node has registered with the cluster."""

OBJECT_STORE_BYTES = 200 * 2**20
"""Object store per node: ample for the tests' few-MB cohorts, instead of Ray's default 30 % of memory on a
machine shared with other work."""

AUTH_MODE_VARIABLE = "RAY_AUTH_MODE"
"""Environment variable holding Ray's authentication mode (``token`` or ``disabled``)."""


def auth_mode() -> str:
    """The token authentication mode the test cluster must use: this process's own.

    Driver and nodes must agree both ways: a node rejects a driver without the token, and a driver in token
    mode (which a local ``ray.init`` in this process switches on, through this variable, when an earlier
    test started one) rejects the GCS's calls about the actors it owns, which then die unstarted ("all
    references to the actor were removed"). ``ray start --head`` would pick token mode by itself whenever
    ``~/.ray/auth_token`` exists, so the mode is always passed explicitly. This process's mode is read from
    the variable when Ray is imported, so the test cannot switch it on afterwards: the cluster follows it
    (off unless an earlier local ``ray.init`` switched it on), for the minute the module's cluster lives."""
    return os.environ.get(AUTH_MODE_VARIABLE) or "disabled"


def free_port() -> int:
    """A TCP port nobody listens on right now (the OS's choice)."""
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def ray_cli() -> str | None:
    """The ``ray`` command of this Python environment, or None when it is not installed."""
    beside = Path(sys.executable).with_name("ray")
    return str(beside) if beside.exists() else shutil.which("ray")


def _children() -> dict[int, list[int]]:
    """Parent pid -> child pids of every process on the machine (from /proc)."""
    out: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # exited meanwhile
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])  # fields after "(comm)": state, ppid, ...
        out.setdefault(ppid, []).append(int(entry.name))
    return out


def descendants(pid: int) -> set[int]:
    """Every process below ``pid``."""
    tree = _children()
    found: set[int] = set()
    stack = [pid]
    while stack:
        for child in tree.get(stack.pop(), []):
            if child not in found:
                found.add(child)
                stack.append(child)
    return found


@dataclass
class Node:
    """One ``ray start --block`` process (its own process group) and its temp dir."""

    name: str
    proc: subprocess.Popen[bytes]
    temp_dir: Path

    @property
    def log(self) -> Path:
        return self.temp_dir / "ray-start.log"

    def wait_started(self, timeout_s: float = START_TIMEOUT_S) -> None:
        """Return once ``ray start`` reports the node up; fail with its log if it exits or takes too long."""
        deadline = time.monotonic() + timeout_s
        while STARTED not in self.log.read_text(errors="replace"):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"ray node {self.name} did not start:\n{self.log.read_text()[-4000:]}")
            time.sleep(POLL_S)

    def pids(self) -> set[int]:
        """The node's processes: ``ray start`` and every process below it while it runs, plus any naming the
        node's temp dir on its command line (Ray's workers run in process groups of their own, and a
        process whose parent died is no longer below it). Once ``ray start`` has exited and been reaped its
        pid may belong to someone else, so then only the latter count."""
        marker = str(self.temp_dir).encode()
        named = set()
        for entry in Path("/proc").iterdir():
            try:
                if entry.name.isdigit() and marker in (entry / "cmdline").read_bytes():
                    named.add(int(entry.name))
            except OSError:  # exited meanwhile, or not ours to read
                continue
        if self.proc.poll() is not None:
            return named
        return {self.proc.pid} | descendants(self.proc.pid) | named

    def kill(self) -> None:
        """Kill every process of the node at once (SIGKILL), as when its machine is lost.

        Also the teardown: nothing a node leaves outside its temp dir needs a graceful stop, and on SIGTERM
        ``ray start`` and its agents take seconds to exit."""
        pids = self.pids()
        if self.proc.poll() is None:  # not reaped yet: its pid is still its process group's id
            os.killpg(self.proc.pid, signal.SIGKILL)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(timeout=START_TIMEOUT_S)


@dataclass
class Cluster:
    """A head node and worker nodes on loopback; ``address`` is what ``engine.ray_address`` takes."""

    address: str
    env: dict[str, str]
    nodes: dict[str, Node] = field(default_factory=dict)

    def start_node(
        self, name: str, resources: Mapping[str, float], num_cpus: int, head: bool = False
    ) -> Node:
        """Start a node advertising ``resources`` (``ray start --resources``) and wait until it is up."""
        cli = ray_cli()
        assert cli is not None
        temp_dir = Path(tempfile.mkdtemp(prefix=f"elray-{name}-"))  # short: Ray's socket paths must be too
        args = [
            cli,
            "start",
            "--block",
            f"--node-ip-address={LOOPBACK}",
            f"--num-cpus={num_cpus}",
            f"--resources={json.dumps(dict(resources))}",
            f"--temp-dir={temp_dir}",
            f"--object-store-memory={OBJECT_STORE_BYTES}",
            "--disable-usage-stats",
            "--include-log-monitor=false",
            # every node on this machine needs its own agent ports (the listen port's default is fixed)
            f"--dashboard-agent-listen-port={free_port()}",
            f"--dashboard-agent-grpc-port={free_port()}",
            f"--metrics-export-port={free_port()}",
            f"--runtime-env-agent-port={free_port()}",
        ]
        if head:
            args += ["--head", f"--port={self.address.rsplit(':', 1)[1]}", "--include-dashboard=false"]
        else:
            args += [f"--address={self.address}"]
        with open(temp_dir / "ray-start.log", "wb") as log:
            proc = subprocess.Popen(
                args, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        node = self.nodes[name] = Node(name, proc, temp_dir)
        node.wait_started()
        return node

    def stop(self) -> None:
        """Stop every node (worker nodes first) and remove their temp dirs."""
        for node in reversed(list(self.nodes.values())):
            try:
                node.kill()
            finally:
                shutil.rmtree(node.temp_dir, ignore_errors=True)


@contextmanager
def two_node_cluster(cpus_per_node: int, shared: Mapping[str, float]) -> Iterator[Cluster]:
    """Nodes ``a`` (the head) and ``b``, each with ``cpus_per_node`` CPUs, the ``shared`` resources and one
    of its own (``node_a`` / ``node_b``); stopped on exit, also when starting fails half-way.

    The nodes' workers import the edgelearn this process imported (its folder leads their PYTHONPATH)."""
    src = str(Path(edgelearn.__file__).resolve().parents[1])
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH")) if p),
        AUTH_MODE_VARIABLE: auth_mode(),
    }
    env.pop("RAY_ADDRESS", None)
    cluster = Cluster(f"{LOOPBACK}:{free_port()}", env)
    try:
        cluster.start_node("a", {**shared, "node_a": 1}, cpus_per_node, head=True)
        cluster.start_node("b", {**shared, "node_b": 1}, cpus_per_node)
        yield cluster
    finally:
        cluster.stop()
