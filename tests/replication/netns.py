"""A node in a network namespace of its own, whose link a test can cut and heal.

The host end of a veth pair carries a private /30 (10.213.X.Y); the namespace holds
the other end and nothing else (only loopback besides it, no default route), so
its processes can reach the host's addresses on that /30 and nothing beyond. etcd
and the other nodes listen on the host end's address, so both sides reach them.
Cutting is ``ip link set DEV down`` inside the namespace: its route goes away (its
sends fail at once) and the host's packets to it are dropped. An ``unreachable``
route for the /30 on the host stays as a floor, so nothing meant for the namespace
can ever take the host's default route. Needs root (``ip netns``).
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from abode.cluster.cli.etcd import EtcdProcess, free_port
from tests.cluster.harness import Child, Cluster
from tests.harness import ROOT


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


def available() -> str | None:
    """Why namespaces cannot be used here, or None if they can."""
    if shutil.which("ip") is None:
        return "no `ip` command"
    if os.geteuid() != 0:
        return "not root"
    return None


@dataclass
class Netns:
    name: str
    host_dev: str
    ns_dev: str
    host_ip: str
    ns_ip: str
    subnet: str

    @classmethod
    def create(cls) -> Netns:
        used = subprocess.run(["ip", "-o", "addr"], capture_output=True, text=True,
                              check=True).stdout
        for _ in range(50):
            third, fourth = random.randrange(256), 4 * random.randrange(64)
            prefix = f"10.213.{third}."
            if prefix not in used:
                break
        else:
            raise RuntimeError("no free 10.213.x.y/30 for the test namespace")
        tag = os.urandom(3).hex()
        net = cls(f"abode-{tag}", f"vab{tag}h", f"vab{tag}n", f"{prefix}{fourth + 1}",
                  f"{prefix}{fourth + 2}", f"{prefix}{fourth}/30")
        _ip("netns", "add", net.name)
        try:
            _ip("link", "add", net.host_dev, "type", "veth", "peer", "name", net.ns_dev)
            _ip("link", "set", net.ns_dev, "netns", net.name)
            _ip("addr", "add", f"{net.host_ip}/30", "dev", net.host_dev)
            _ip("link", "set", net.host_dev, "up")
            _ip("route", "add", "unreachable", net.subnet, "metric", "4000")
            net.exec("addr", "add", f"{net.ns_ip}/30", "dev", net.ns_dev)
            net.exec("link", "set", "lo", "up")
            net.exec("link", "set", net.ns_dev, "up")
        except Exception:
            net.delete()
            raise
        return net

    def exec(self, *args: str) -> None:
        _ip("netns", "exec", self.name, "ip", *args)

    def cut(self) -> None:
        self.exec("link", "set", self.ns_dev, "down")

    def heal(self) -> None:
        self.exec("link", "set", self.ns_dev, "up")

    def delete(self) -> None:
        for args in (["route", "del", "unreachable", self.subnet, "metric", "4000"],
                     ["link", "del", self.host_dev], ["netns", "del", self.name]):
            subprocess.run(["ip", *args], capture_output=True, timeout=10, check=False)


class HostEtcd(EtcdProcess):
    """etcd serving clients on the host end of the veth pair."""

    host: str = "127.0.0.1"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.client_port}"


def start_etcd(tmp_path: Path, host: str) -> HostEtcd:
    base = tmp_path / "etcd"
    base.mkdir(parents=True, exist_ok=True)
    etcd = HostEtcd(data_dir=base / "data", log_path=base / "etcd.log",
                    client_port=free_port(), peer_port=free_port(), fsync=False)
    etcd.host = host
    etcd.start()
    return etcd


class NsChild(Child):
    """A child process started inside the namespace."""

    netns: str = ""
    ns_local: str = ""  # where a process inside the namespace reaches it

    def launch(self) -> None:
        self.ready_path.unlink(missing_ok=True)
        self.info = {}
        with open(self.log_path, "ab") as log:
            log.write(f"---- start (netns {self.netns}) {' '.join(self.args)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                ["ip", "netns", "exec", self.netns, sys.executable, "-m", "abode",
                 *self.args, "--ready-file", str(self.ready_path)],
                cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )


def add_ns_node(cluster: Cluster, net: Netns, node_id: str, **flags: object) -> NsChild:
    """Node `node_id` inside the namespace (``launch()`` it). It listens on every
    address there (its port is free: the namespace is new), so a client inside can
    reach it on loopback (``ns_local``) while its link is cut; the others reach it
    at the namespace's address."""
    port = random.randrange(20000, 60000)
    args = ["node", "--app", cluster.app, "--etcd", cluster.etcd.url, "--cluster",
            cluster.cluster, "--lease-ttl", f"{cluster.lease_ttl:g}", "--id", node_id,
            "--listen", f"0.0.0.0:{port}", "--advertise", f"{net.ns_ip}:{port}",
            "--data", str(cluster.base / "nodes")]
    for key, value in flags.items():
        args += [f"--{key.replace('_', '-')}", str(value)]
    child = NsChild(node_id, "node", args, cluster.env, cluster.base / "logs" / f"{node_id}.log",
                    cluster.base / "run" / f"{node_id}.json")
    child.netns = net.name
    child.ns_local = f"127.0.0.1:{port}"
    cluster.children[node_id] = child
    return child


def run_in(net: Netns, code: str, *args: str, timeout: float = 60.0) -> str:
    """Run Python `code` inside the namespace; returns its stdout."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ABODE_")}
    result = subprocess.run(
        ["ip", "netns", "exec", net.name, sys.executable, "-c", code, *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout
