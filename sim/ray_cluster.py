"""Connecting to a Ray cluster for `smartquant regress --ray` (docs/BENCH.md), boundedly.

Ray itself retries an unreachable address for minutes (a GCS address) or half a minute
(a `ray://` client address), so the address's port is probed first: an unreachable
cluster is a one-line `SmartquantError` within `PROBE_TIMEOUT_S`.  Ray is the optional
extra `smartquant[cluster]` (`ray[client]`, which the `ray://` form needs).
"""

from __future__ import annotations

import os
import socket
import traceback

from ..errors import SmartquantError

PROBE_TIMEOUT_S = 5.0       #: seconds to wait for the cluster's port to accept a connection
CLIENT_SCHEME = "ray://"
CLIENT_DEFAULT_PORT = 10001     #: Ray's for `ray://HOST`
NEW_LOCAL_CLUSTER = "local"     #: the address that starts a one-machine cluster (nothing to probe)
#: `ray://` connections whose server side failed to start are tried this often: the client
#: server starts one server process per client, which sometimes dies at once on a loaded machine
CONNECT_ATTEMPTS = 2


class ClusterLost(Exception):
    """The cluster, a node or a worker went away mid-run: the jobs in `results` (in job
    order) finished, the others have no result."""

    def __init__(self, reason: str, results: list[dict] | None = None):
        super().__init__(reason)
        self.reason = reason
        self.results = results or []


def import_ray():
    try:
        import ray
    except ImportError:
        raise SmartquantError("--ray needs Ray, the optional extra: pip install 'smartquant[cluster]'") from None
    return ray


def one_line(exc: BaseException) -> str:
    """An exception as the last line Python would print for it."""
    return traceback.format_exception_only(exc)[-1].strip()


def bootstrap_endpoint(address: str) -> tuple[str, int] | None:
    """The host and port Ray connects to first for `address` (the client server for
    `ray://HOST:PORT`, the GCS otherwise, found the way `ray.init` finds it for `auto`);
    None for `local`, which starts a cluster instead."""
    if address == "auto":
        address = os.environ.get("RAY_ADDRESS") or address
    if address == NEW_LOCAL_CLUSTER:
        return None
    if address.startswith(CLIENT_SCHEME):
        host_port = address[len(CLIENT_SCHEME):].split("/")[0]
        if not host_port.rpartition(":")[2].isdigit():
            host_port += f":{CLIENT_DEFAULT_PORT}"
    else:
        from ray._private import services       # ray.init's own resolution of 'auto' and localhost
        try:
            host_port = services.canonicalize_bootstrap_address_or_die(address)
        except (ConnectionError, ValueError) as exc:
            raise SmartquantError(f"--ray {address}: {exc}") from None
    host, _, port = host_port.rpartition(":")
    if not host or not port.isdigit():
        raise SmartquantError(f"--ray {address}: not an address (HOST:PORT, ray://HOST:PORT, auto or local)")
    return host.strip("[]"), int(port)


def probe(address: str, host: str, port: int, timeout_s: float = PROBE_TIMEOUT_S) -> None:
    """Raise a one-line SmartquantError unless `host:port` accepts a TCP connection within `timeout_s`."""
    try:
        socket.create_connection((host, port), timeout=timeout_s).close()
    except OSError as exc:
        why = "no answer" if isinstance(exc, socket.timeout) else (exc.strerror or one_line(exc))
        raise SmartquantError(f"cannot reach the Ray cluster at {address} ({host}:{port}: {why})") from None


def connect(address: str):
    """The `ray` module, connected to the cluster at `address` (probed first)."""
    ray = import_ray()
    endpoint = bootstrap_endpoint(address)
    if endpoint is not None:
        probe(address, *endpoint)
    for attempt in range(1, CONNECT_ATTEMPTS + 1):
        try:
            ray.init(address=address, ignore_reinit_error=True, log_to_driver=False)
            return ray
        except ConnectionAbortedError as exc:   # the client server failed to start this client's server
            failure = exc
            ray.shutdown()
        except Exception as exc:        # Ray raises ConnectionError, RuntimeError, ValueError ...
            failure = exc
            break
    raise SmartquantError(f"cannot connect to the Ray cluster at {address} "
                          f"({attempt} attempt{'s' * (attempt > 1)}): {one_line(failure)}")
