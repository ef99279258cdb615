"""The executor that submits cells as Ray tasks with the resources the study asks for per
cell kind, and the in-flight bound computed from the cluster's resources."""

from __future__ import annotations

import logging
import os
import time
import traceback
from pathlib import Path
from typing import Any

from orchestrator.errors import AdvgridError
from orchestrator.run.executor import Outcome

log = logging.getLogger(__name__)


def run_cells(payloads: list[dict]) -> list[tuple[dict | None, str | None]]:
    """Run cells one after another in this worker: ``(result, None)`` or ``(None, traceback)``.

    One cell's exception does not stop the others.
    """
    from tasks.cells import run_cell

    out: list[tuple[dict | None, str | None]] = []
    for payload in payloads:
        try:
            out.append((run_cell(payload), None))
        except Exception:
            out.append((None, traceback.format_exc()))
    return out


class RayExecutor:
    """Submits cells as Ray tasks and collects them with ``ray.wait``.

    ``address`` is ``local`` (start a private cluster on this machine), ``auto`` (the
    cluster this machine belongs to) or ``ray://host:10001``. A cluster already
    initialized in this process (tests, notebooks) is reused and left running.
    """

    name = "ray"

    def __init__(self, address: str = "local") -> None:
        import ray

        self._ray = ray
        self._owned = False
        if not ray.is_initialized():
            target = None if address in ("", "local") else address
            start = time.perf_counter()
            try:
                ray.init(
                    address=target,
                    include_dashboard=False,
                    log_to_driver=True,
                    configure_logging=False,
                )
            except Exception as exc:
                raise AdvgridError(_ray_hint(address, exc)) from exc
            self._owned = True
            log.info("Ray up in %.1f s at %s", time.perf_counter() - start, address)
        from tasks.cells import run_cell

        self._remote = ray.remote(run_cell)
        self._group_remote = ray.remote(run_cells)
        self._refs: dict[Any, int | list[int]] = {}

    def default_inflight(self, needs: list[dict[str, float]]) -> int:
        """Twice the most cells of one kind the cluster can run at once, at least 2.

        ``needs`` are the ``{num_cpus, num_gpus}`` of the cell kinds to run: with
        ``num_gpus: 0.25`` attack cells, 8 GPUs run 32 at once and 64 are kept in flight,
        so a worker that finishes always finds the next cell queued. A kind needing GPUs
        on a cluster without them is logged: Ray holds such cells until a GPU node joins.
        """
        return inflight_bound(self._ray.cluster_resources(), needs)

    def submit(self, cell_id: int, payload: dict, resources: dict[str, float]) -> None:
        ref = self._remote.options(
            num_cpus=resources.get("num_cpus", 1),
            num_gpus=resources.get("num_gpus", 0),
            max_retries=2,  # worker or node death; exceptions in the cell are not retried here
            name=f"advgrid:{payload['kind']}:{payload['key'][:12]}",
        ).remote(payload)
        self._refs[ref] = cell_id

    def submit_group(
        self, cell_ids: list[int], payloads: list[dict], resources: dict[str, float]
    ) -> None:
        """Run ``payloads`` one after another as one task (a worker's death reruns them all)."""
        if len(payloads) == 1:
            self.submit(cell_ids[0], payloads[0], resources)
            return
        first = payloads[0]
        ref = self._group_remote.options(
            num_cpus=resources.get("num_cpus", 1),
            num_gpus=resources.get("num_gpus", 0),
            max_retries=2,
            name=f"advgrid:{first['kind']}:{first['key'][:12]}+{len(payloads) - 1}",
        ).remote(payloads)
        self._refs[ref] = list(cell_ids)

    def poll(self, timeout: float) -> list[Outcome]:
        if not self._refs:
            return []
        # return as soon as one is back (then take whatever else is ready too): waiting for
        # all, or for the timeout, leaves finished workers idle until the next submit
        refs = list(self._refs)
        ready, rest = self._ray.wait(refs, num_returns=1, timeout=timeout)
        if ready and rest:
            more, _ = self._ray.wait(rest, num_returns=len(rest), timeout=0)
            ready += more
        out = []
        for ref in ready:
            ids = self._refs.pop(ref)
            try:
                value = self._ray.get(ref)
            except Exception as exc:  # RayTaskError carries the remote traceback
                error = str(exc) or repr(exc)
                out += [Outcome(i, None, error) for i in (ids if isinstance(ids, list) else [ids])]
                continue
            if isinstance(ids, list):
                out += [Outcome(i, r, e) for i, (r, e) in zip(ids, value, strict=True)]
            else:
                out.append(Outcome(ids, value, None))
        return out

    def cancel_all(self) -> list[int]:
        ids = [i for v in self._refs.values() for i in (v if isinstance(v, list) else [v])]
        for ref in list(self._refs):
            self._ray.cancel(ref, force=True)
        self._refs.clear()
        return ids

    def shutdown(self) -> None:
        if self._owned:
            self._ray.shutdown()


def inflight_bound(cluster: dict[str, float], needs: list[dict[str, float]]) -> int:
    """See :meth:`RayExecutor.default_inflight`; ``cluster`` as ``ray.cluster_resources()``."""
    cpus, gpus = cluster.get("CPU", 1.0), cluster.get("GPU", 0.0)
    most = 0.0
    for need in needs or [{"num_cpus": 1.0, "num_gpus": 0.0}]:
        fits = []
        if need.get("num_cpus"):
            fits.append(cpus / need["num_cpus"])
        if need.get("num_gpus"):
            if not gpus:
                log.warning(
                    "cells need %g GPU each but the cluster has none: they wait for a GPU node",
                    need["num_gpus"],
                )
            fits.append(gpus / need["num_gpus"])
        most = max(most, min(fits) if fits else cpus)
    return max(2, int(2 * most))


_AUTH_REFUSED = ("InvalidAuthToken", "AuthenticationError", "Unauthenticated")
TOKEN_AUTH_DOCS = "https://docs.ray.io/en/latest/ray-security/token-auth.html"


def _ray_hint(address: str, exc: BaseException) -> str:
    """The error for a failed ``ray.init``, saying what to set when the cluster refused us.

    Ray raises a bare ``ConnectionError("Failed to connect to Ray cluster at …")``; that the
    cluster refused the token shows only in the exceptions chained to it.
    """
    text = f"could not connect to Ray at {address!r}: {exc}"
    if not _auth_refused(exc):
        return text
    source = _token_source()
    if os.environ.get("RAY_AUTH_MODE", "").lower() != "token":
        return text + (
            "\nThe cluster requires token authentication and RAY_AUTH_MODE is not 'token' "
            "here (with an explicit address Ray does not turn it on by itself). Run with "
            f"RAY_AUTH_MODE=token and the cluster's token in {source}; on a node of the "
            f"cluster, `ray get-auth-token` prints it. See {TOKEN_AUTH_DOCS}"
        )
    return text + (
        f"\nThe cluster refused the token in {source}: it is not the token the cluster "
        "was started with. Copy the cluster's token there (on a node of the cluster, "
        f"`ray get-auth-token` prints it). See {TOKEN_AUTH_DOCS}"
    )


def _auth_refused(exc: BaseException) -> bool:
    """Whether ``exc`` or an exception chained to it says the cluster refused the token."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if any(word in f"{type(e).__name__}: {e}" for word in _AUTH_REFUSED):
            return True
        todo += [e.__cause__, e.__context__]
    return False


def _token_source() -> str:
    """Where Ray reads the token in this environment (never the token itself)."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return "the RAY_AUTH_TOKEN environment variable"
    if os.environ.get("RAY_AUTH_TOKEN_PATH"):
        return f"{os.environ['RAY_AUTH_TOKEN_PATH']} (RAY_AUTH_TOKEN_PATH)"
    return f"{Path.home() / '.ray' / 'auth_token'} (or RAY_AUTH_TOKEN / RAY_AUTH_TOKEN_PATH)"
