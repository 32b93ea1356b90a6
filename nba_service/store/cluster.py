"""A local Valkey Cluster of N masters from the embedded server binary (tests and demos).

Slots are assigned with CLUSTER ADDSLOTSRANGE and nodes joined with CLUSTER MEET, so nothing
beyond the server binary is needed; readiness is polled (cluster_state:ok on every node and
the same slot map everywhere), never assumed after a sleep.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

import redis

from nba_service.store.embedded import EmbeddedRedis, EmbeddedRedisError

__all__ = ["LocalCluster"]

N_SLOTS = 16384


def _command(client: redis.Redis, *args: object) -> Any:
    send: Callable[..., Any] = client.execute_command
    return send(*args)


class LocalCluster:
    """`masters` cluster-enabled servers on free loopback ports, no replicas."""

    def __init__(self, masters: int = 3, binary: str | None = None,
                 startup_timeout_s: float = 20.0) -> None:
        if masters < 1:
            raise ValueError(f"masters must be >= 1, got {masters}")
        self.masters = masters
        self.binary = binary
        self.startup_timeout_s = startup_timeout_s
        self.nodes: list[EmbeddedRedis] = []

    @property
    def ports(self) -> list[int]:
        return [n.port for n in self.nodes if n.port is not None]

    @property
    def url(self) -> str:
        """A seed node URL for `RedisCluster.from_url`."""
        if not self.nodes:
            raise EmbeddedRedisError("cluster is not started")
        return self.nodes[0].tcp_url

    def start(self) -> LocalCluster:
        try:
            for _ in range(self.masters):
                self.nodes.append(EmbeddedRedis(self.binary, cluster=True).start())
            clients = [redis.Redis(host="127.0.0.1", port=p) for p in self.ports]
            try:
                per_node = N_SLOTS // self.masters
                for i, client in enumerate(clients):
                    first = i * per_node
                    last = N_SLOTS - 1 if i == self.masters - 1 else first + per_node - 1
                    _command(client, "CLUSTER", "ADDSLOTSRANGE", first, last)
                for port in self.ports[1:]:
                    _command(clients[0], "CLUSTER", "MEET", "127.0.0.1", port)
                self._wait_converged(clients)
            finally:
                for client in clients:
                    client.close()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_converged(self, clients: list[redis.Redis]) -> None:
        deadline = time.monotonic() + self.startup_timeout_s
        delay = 0.01
        state = ""
        while True:
            states = []
            for client in clients:
                info = _command(client, "CLUSTER", "INFO")
                text = info.decode() if isinstance(info, bytes) else str(info)
                fields = dict(
                    line.split(":", 1) for line in text.splitlines() if ":" in line
                )
                states.append(
                    fields.get("cluster_state") == "ok"
                    and int(fields.get("cluster_known_nodes", 0)) == self.masters
                    and int(fields.get("cluster_slots_assigned", 0)) == N_SLOTS
                )
                state = text.replace("\r\n", " ")
            if all(states):
                return
            if time.monotonic() > deadline:
                raise EmbeddedRedisError(
                    f"cluster of {self.masters} did not converge within "
                    f"{self.startup_timeout_s}s; last CLUSTER INFO: {state[:300]}"
                )
            time.sleep(delay)  # back-off between polls of the real condition above
            delay = min(delay * 2, 0.1)

    def stop(self) -> None:
        nodes, self.nodes = self.nodes, []
        for node in nodes:
            with contextlib.suppress(Exception):
                node.stop()

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
