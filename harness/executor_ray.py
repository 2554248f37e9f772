"""The Ray executor: one provider's generations spread over Ray actors, one per GPU (or CPU
slot), each holding one pipeline and the LoRAs it has loaded.

The driver (this process) stays the only writer of `run.db`, with the in-process executor's
write-ahead contract and its bookkeeping (`Executor._write_intent`, `_spawn_finish`, ...):
the intent is committed before a batch is handed to a worker, the result when it comes back.
Placement (`ray_placement.py`) keeps LoRA sets warm. A worker that dies (a killed actor, a
lost node, the process killed for memory) has its batch's intents closed as `worker_lost`
and the batch re-queued for the others, so every cell is stored exactly once and the run
finishes while one worker lives. Out of GPU memory: the worker frees torch's cache, a batch
is re-queued split into single cells, and a cell that runs out of memory alone is tried on
each other live worker, then recorded failed (`out_of_memory`). A worker that fails to start
is dropped (the run says so) and the others run the grid. Ctrl-C records what was in flight as
interrupted (a resumable run, as in-process) and the workers are killed. LoRA files a worker
cannot read at the request's path are shipped by content through Ray's object store
(`Shipper`, `lora_shipping.py`, setting `ship_loras`). Ray is imported here only, and only when
a run asks for it.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from lorascope.harness.errors import BadResponse, ProviderError
from lorascope.harness.execute import Executor, batches
from lorascope.harness.lora_shipping import LORA_UNAVAILABLE, Hasher, ShipError, read_verified
from lorascope.harness.plan import Unit
from lorascope.harness.providers.local_pipeline import one_line
from lorascope.harness.ray_placement import Placement, lora_set
from lorascope.harness.ray_worker import OUT_OF_MEMORY
from lorascope.harness.ray_settings import RayChoice
from lorascope.harness.secrets import redact
from lorascope.harness.store import INTERRUPTED
from lorascope.harness.summary import WorkerSummary

#: Error kind of a generation whose worker died before answering (the batch is re-queued).
WORKER_LOST = "worker_lost"
#: Seconds the workers may take to start (actor scheduled, provider built) before giving up.
START_TIMEOUT_S = 300.0
#: Test-only fault injection, read by the driver and handed to the workers (never set it in a
#: real run): comma-separated `oom_above=N` (a pipeline call with more than N images raises
#: torch's CUDA out-of-memory error) and `fail_start=I` (worker I fails to load its pipeline).
TEST_HOOKS_ENV = "LORASCOPE_TEST_RAY_FAULTS"


def _test_hooks() -> dict[str, int]:
    raw = os.environ.get(TEST_HOOKS_ENV, "")
    hooks: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in raw.split(","))):
        key, _, value = part.partition("=")
        if key not in ("oom_above", "fail_start") or not value.strip().isdigit():
            raise RayStartError(f"{TEST_HOOKS_ENV}: {part!r} is not oom_above=N or fail_start=I")
        hooks[key] = int(value)
    return hooks


class RayStartError(Exception):
    """Ray is missing, the cluster cannot be reached, or it cannot hold the workers asked for."""


class OutOfMemory(Exception):
    """A batch ran out of GPU memory on a worker (which lives on); `ready` are its (unit,
    intent id) pairs, still open: the caller splits, re-queues or fails them."""

    def __init__(self, reason: str, ready: list[tuple[Unit, int]], started: float) -> None:
        super().__init__(reason)
        self.ready = ready
        self.started = started


class WorkerLost(Exception):
    """The actor died (killed, node lost, process killed); `units` (its batch, intents
    closed) go back to the queue."""

    def __init__(self, reason: str, units: list[Unit] | None = None) -> None:
        super().__init__(reason)
        self.units = units or []


@dataclass
class _Worker:
    name: str  # provider/wN
    handle: Any
    summary: WorkerSummary
    loaded: set[str] = field(default_factory=set)
    alive: bool = True


class Shipper:
    """The driver's side of LoRA shipping: each batch's manifest (path -> the sha256 it was
    planned with) and, for the files a worker asks for (or all with `always`), the bytes put
    into Ray's object store once per distinct file and kept there for the run."""

    def __init__(self, ray: Any, mode: str) -> None:
        self.ray = ray
        self.mode = mode
        self.refs: dict[str, Any] = {}  # sha256 -> object ref
        self.files = 0  # distinct files put into the object store
        self.bytes = 0
        self.hasher = Hasher()
        self._lock = asyncio.Lock()

    def manifest(self, requests: list[Any]) -> dict[str, str]:
        """Every LoRA path the batch names -> the sha256 it was planned with (hashed here, once,
        for a spec that carries none: then the driver's file is what the fingerprint names)."""
        out: dict[str, str] = {}
        for request in requests:
            for spec in request.loras:
                if not spec.path or spec.path in out:
                    continue
                sha = spec.sha256 or self.hasher.sha_of(Path(spec.path))
                if sha is None:
                    raise ShipError(f"LoRA {spec.path}: cannot be read on the driver to name its bytes",
                                    LORA_UNAVAILABLE)
                out[spec.path] = sha
        return out

    async def refs_for(self, manifest: dict[str, str], shas: Any) -> dict[str, Any]:
        """Object refs for these sha256s, each file read (its bytes checked) and put once."""
        path_of = {sha: path for path, sha in manifest.items()}
        out: dict[str, Any] = {}
        async with self._lock:  # two workers asking for one file at once: one read, one put
            for sha in dict.fromkeys(shas):
                if sha not in path_of:
                    raise ShipError(f"a worker asked for LoRA sha256 {str(sha)[:12]}…, which the batch does not name")
                if sha not in self.refs:
                    data = await asyncio.to_thread(read_verified, path_of[sha], sha)
                    self.refs[sha] = await asyncio.to_thread(self.ray.put, data)
                    self.files += 1
                    self.bytes += len(data)
                out[sha] = self.refs[sha]
        return out


class RayPool:
    """The actors of one provider, started on (or joined to) a Ray cluster."""

    def __init__(self, ray: Any, workers: list[_Worker], owns_ray: bool, batch_seeds: bool,
                 failed_start: list[str] | None = None, ship_loras: str = "auto") -> None:
        self.ray = ray
        self.workers = workers
        self.owns_ray = owns_ray
        self.batch_seeds = batch_seeds
        self.failed_start = failed_start or []  # "wN: why" for each worker dropped at start
        self.started = time.monotonic()
        self.shipper = Shipper(ray, ship_loras)

    @classmethod
    async def start(cls, choice: RayChoice, provider: str, inst: Any, *, in_thread: bool = False) -> "RayPool":
        try:
            import ray
        except ImportError:
            raise RayStartError("the Ray executor needs Ray: pip install 'lorascope[ray]'") from None
        from lorascope.harness.ray_worker import PipelineWorker

        owns = False
        if not ray.is_initialized():
            try:
                kwargs = dict(address=choice.address, include_dashboard=False, log_to_driver=False,
                              configure_logging=False)
                if in_thread:  # starting Ray takes ~10 s; other providers share this event loop
                    await asyncio.to_thread(ray.init, **kwargs)  # (Ray then sets no SIGTERM handler)
                else:
                    ray.init(**kwargs)
            except Exception as exc:
                where = choice.address or "a local Ray instance"
                raise RayStartError(f"cannot start or join {where}: {one_line(exc, 240)}") from None
            owns = True
        handles: list[Any] = []
        failed: dict[int, str] = {}  # worker index -> why it did not start (dropped; the others run)
        try:
            hooks = _test_hooks()
            n, gpus, cpus = _shape(choice, ray.cluster_resources())
            remote = ray.remote(PipelineWorker)
            tag = secrets.token_hex(3)
            config = inst.config.model_copy(update={"executor": "local", "ray_address": None}).model_dump()
            handles = [
                remote.options(name=f"lorascope-{tag}-{provider}-w{i}", num_cpus=cpus, num_gpus=gpus,
                               max_restarts=0).remote(type(inst), config, _threads(choice, gpus),
                                                      hooks.get("oom_above"), hooks.get("fail_start") == i,
                                                      ship_loras=choice.ship_loras, lora_cache=choice.lora_cache)
                for i in range(n)
            ]
            infos = await _each([h.info.remote() for h in handles], START_TIMEOUT_S)
            expected = inst.model_version()
            for i, info in enumerate(infos):
                if isinstance(info, BaseException):
                    failed[i] = f"did not start: {one_line(info, 300)}"
                elif info["model_version"] != expected:  # a setting, not a fault: every worker would differ
                    raise RayStartError(
                        f"Ray worker {i} on {info['host']} would run {info['model_version']!r}, but the "
                        f"fingerprints name {expected!r} (resolved on this machine): set device and dtype "
                        "explicitly in the suite's provider settings so both sides agree"
                    )
            # pipelines load side by side before any batch (a real model takes minutes)
            live = [i for i in range(n) if i not in failed]
            warmed = await _each([handles[i].warm.remote() for i in live], None)
            for i, w in zip(live, warmed):
                error = one_line(w, 300) if isinstance(w, BaseException) else w["error"]
                if error:
                    failed[i] = f"could not load the pipeline: {error}"
            if len(failed) == n:
                why = "; ".join(f"w{i} {failed[i]}" for i in sorted(failed))
                raise RayStartError(f"no Ray worker started ({why})")
        except BaseException:
            for h in handles:
                try:
                    ray.kill(h)
                except Exception:
                    pass
            if owns:
                ray.shutdown()
            raise
        for i in failed:
            try:
                ray.kill(handles[i])  # it may hold a GPU the cluster can give to others
            except Exception:
                pass
        workers = []
        for i, (handle, info) in enumerate(zip(handles, infos)):
            if i in failed:
                continue
            where = (f"{info['host']} pid {info['pid']}" + (f" gpu {','.join(info['gpus'])}" if info["gpus"] else "")
                     + f" {info['torch_threads']} thread(s)")
            workers.append(_Worker(f"{provider}/w{i}", handle, WorkerSummary(provider=provider, where=where)))
        first = infos[min(i for i in range(n) if i not in failed)]
        explicit = getattr(inst.config, "batch_seeds", None)
        batch_seeds = explicit if explicit is not None else bool(first["batch_seeds"])
        return cls(ray, workers, owns, batch_seeds,
                   [redact(f"{provider}/w{i}: {failed[i]}") for i in sorted(failed)], choice.ship_loras)

    async def call(self, worker: _Worker, requests: list[Any]) -> dict[str, Any]:
        """One batch on one worker; a dead actor raises `WorkerLost`. The LoRA files go with
        it as a manifest; with `always` their bytes too, with `auto` only those the worker
        answers it lacks (then the batch is sent once more)."""
        exc_mod = self.ray.exceptions
        lost = (exc_mod.RayActorError, exc_mod.WorkerCrashedError, exc_mod.NodeDiedError,
                exc_mod.ObjectLostError, getattr(exc_mod, "OutOfMemoryError", exc_mod.RayActorError))
        shipper = self.shipper
        try:
            manifest = shipper.manifest(requests)
            shipped = await shipper.refs_for(manifest, manifest.values()) if shipper.mode == "always" else {}
            reply = await worker.handle.generate_batch.remote(requests, manifest, shipped)
            if reply.get("need") and shipper.mode == "auto":
                shipped = await shipper.refs_for(manifest, reply["need"])
                reply = await worker.handle.generate_batch.remote(requests, manifest, shipped)
            if reply.get("need"):
                missing = ", ".join(p for p, sha in manifest.items() if sha in reply["need"])
                raise ShipError(f"LoRA {missing}: Ray worker {worker.name} still lacks it after shipping",
                                LORA_UNAVAILABLE)
            return reply
        except ShipError as exc:
            return {"results": [], "error": (exc.kind, redact(str(exc))), "oom": False, "state": None}
        except lost as exc:
            raise WorkerLost(one_line(exc, 200)) from None

    def stop(self) -> None:
        """Kill every actor (they hold a GPU each); leave a cluster we joined running. The
        shipped files' object refs are dropped, so Ray frees them."""
        self.shipper.refs.clear()
        for worker in self.workers:
            try:
                self.ray.kill(worker.handle)
            except Exception:
                pass
            worker.alive = False
        if self.owns_ray:
            self.ray.shutdown()


async def _each(refs: list[Any], timeout: float | None) -> list[Any]:
    """Await Ray calls side by side: each one's value, or its exception (a `RayStartError` for
    one still running after `timeout` seconds), so one bad worker does not sink the others."""

    async def one(ref: Any) -> Any:
        return await ref

    tasks = [asyncio.ensure_future(one(r)) for r in refs]
    if not tasks:
        return []
    _, pending = await asyncio.wait(tasks, timeout=timeout)
    for task in pending:
        task.cancel()
    out: list[Any] = []
    for task in tasks:
        if task in pending:
            out.append(RayStartError(f"no answer within {timeout:g} s"))
        elif task.exception() is not None:
            out.append(task.exception())
        else:
            out.append(task.result())
    return out


def _shape(choice: RayChoice, resources: dict[str, float]) -> tuple[int, float, float]:
    """(workers, GPUs each, CPUs each) from the settings and what the cluster has."""
    gpus_total, cpus_total = float(resources.get("GPU", 0)), float(resources.get("CPU", 0))
    gpus = choice.gpus_per_worker if choice.gpus_per_worker is not None else (1.0 if gpus_total >= 1 else 0.0)
    cpus = choice.cpus_per_worker
    if choice.workers:
        n = choice.workers
    elif gpus > 0:
        n = int(gpus_total // gpus)
    else:
        n = int(cpus_total // cpus)
    if n < 1 or n * gpus > gpus_total + 1e-9 or n * cpus > cpus_total + 1e-9:
        raise RayStartError(
            f"{max(n, 1)} worker(s) x ({cpus:g} CPU, {gpus:g} GPU) do not fit the cluster's "
            f"{cpus_total:g} CPU and {gpus_total:g} GPU: lower workers, gpus_per_worker or cpus_per_worker"
        )
    return n, gpus, cpus


def _threads(choice: RayChoice, gpus: float) -> int | None:
    """torch CPU threads per worker. On a GPU the pixels do not depend on them: one per CPU
    the worker holds. On CPU they change the last bits, so by default torch keeps its own
    count, as in a single-process run (byte-identical, but workers share the cores)."""
    if choice.threads_per_worker is not None:
        return choice.threads_per_worker
    return max(1, int(choice.cpus_per_worker)) if gpus > 0 else None


def _key(batch: list[Unit]) -> frozenset[str]:
    return lora_set([str(Path(s.path)) for s in batch[0].request.loras if s.path])


def _activity(batch: list[Unit]) -> str:
    loras = batch[0].request.loras
    what = "+".join(f"{s.label}@{s.scale:g}" for s in loras) if loras else "baseline"
    return f"{what} x{len(batch)}"


async def run_on_ray(ex: Executor, provider: str, units: list[Unit], choice: RayChoice) -> None:
    """Send `units` of `provider` through a Ray pool; called by `execute` in place of the
    in-process workers. Leaves every unit succeeded, failed, re-queued and done, or counted
    as not sent."""
    ps = ex.summary.providers[provider]
    inst = ex.plan.instances[provider]
    if not units:
        return
    try:
        pool = await RayPool.start(choice, provider, inst, in_thread=len(ex.plan.instances) > 1)
    except RayStartError as exc:
        ex.summary.fatal = ex.summary.fatal or f"{provider}: {exc}"
        ps.not_sent += len(units)
        return
    if pool.failed_start:
        ex.summary.notes.append(
            f"{provider}: {len(pool.failed_start)} Ray worker(s) failed to start ({'; '.join(pool.failed_start)}); "
            f"running on the other {len(pool.workers)}"
        )
    started = time.monotonic()
    placement: Placement[list[Unit]] = Placement()
    for batch in batches(units, SimpleNamespace(generate_batch=True, batch_seeds=pool.batch_seeds)):
        placement.add(_key(batch), batch)
    for worker in pool.workers:
        ex.summary.workers[worker.name] = worker.summary
        if ex.progress is not None and hasattr(ex.progress, "add_worker"):
            ex.progress.add_worker(worker.name, f"{worker.name.split('/')[-1]} {worker.summary.where}")
    cond = asyncio.Condition()
    in_flight = 0
    requeued = 0
    oom_failed = 0
    split = 0  # generations re-queued as single cells after a batch ran out of GPU memory
    oom_tried: dict[str, set[str]] = {}  # fingerprint -> workers it ran out of memory on, alone
    retry: list[tuple[Unit, int, str]] = []  # (unit, its closed intent, why): for a worker not yet tried

    def take_retry(worker: _Worker) -> list[Unit] | None:
        for i, (unit, _, _) in enumerate(retry):
            if worker.name not in oom_tried[unit.fingerprint]:
                del retry[i]
                return [unit]
        return None

    def fail_oom(unit: Unit, gid: int, why: str) -> None:
        nonlocal oom_failed
        oom_failed += 1
        tried = ", ".join(sorted(oom_tried[unit.fingerprint]))
        ex.store.record_failure(gid, OUT_OF_MEMORY, redact(
            f"out of GPU memory even alone, on every Ray worker that tried it ({tried}): {why}; "
            "lower the size, set cpu_offload, or use workers with more GPU memory"))
        ps.failed += 1
        ex._advance(unit, failed=True)

    def after_oom(worker: _Worker, oom: OutOfMemory) -> None:
        nonlocal split
        units = [u for u, _ in oom.ready]
        latency = time.monotonic() - oom.started
        for unit, _ in oom.ready:
            ex._settle(unit, 0.0, learn=False)
        if len(units) > 1:  # a batch of seeds: each again on its own
            for unit, gid in oom.ready:
                ex.store.record_failure(gid, OUT_OF_MEMORY, redact(
                    f"out of GPU memory on Ray worker {worker.name} in a batch of {len(units)} ({oom}); "
                    "re-queued as single cells"), latency_s=latency)
            for unit in reversed(units):
                placement.put_back(_key([unit]), [unit])
            split += len(units)
            return
        unit, gid = oom.ready[0]
        oom_tried.setdefault(unit.fingerprint, set()).add(worker.name)
        ex.store.record_failure(gid, OUT_OF_MEMORY, redact(
            f"out of GPU memory on Ray worker {worker.name} even alone ({oom}); re-queued to another worker"),
            latency_s=latency)
        if ex.stop.is_set():
            ps.not_sent += 1
        elif any(w.alive and w.name not in oom_tried[unit.fingerprint] for w in pool.workers):
            retry.append((unit, gid, str(oom)))
        else:
            fail_oom(unit, gid, str(oom))

    def settle_retries() -> None:
        """After a worker is lost: a cell every live worker has run out of memory on fails now."""
        alive = {w.name for w in pool.workers if w.alive}
        if not alive:
            return  # left unsent: a resumed run tries it again
        for entry in list(retry):
            unit, gid, why = entry
            if alive <= oom_tried[unit.fingerprint]:
                retry.remove(entry)
                fail_oom(unit, gid, why)

    async def wake_on_stop() -> None:
        await ex.stop.wait()
        async with cond:
            cond.notify_all()

    async def drive(worker: _Worker) -> None:
        nonlocal in_flight, requeued
        while True:
            async with cond:
                while True:
                    if ex.stop.is_set():
                        return
                    batch = take_retry(worker) or placement.take(worker.name, worker.loaded)
                    if batch is not None:
                        break
                    if in_flight == 0:
                        cond.notify_all()
                        _show(ex, worker, "done")
                        return
                    _show(ex, worker, "idle")
                    await cond.wait()
                in_flight += 1
            try:
                await _dispatch(ex, pool, worker, batch)
            except asyncio.CancelledError:
                if not ex.stop.is_set():
                    raise
                return  # Ctrl-C: _dispatch recorded the batch as interrupted
            except OutOfMemory as oom:
                _show(ex, worker, "out of memory")
                async with cond:
                    after_oom(worker, oom)
            except WorkerLost as lost:
                worker.alive = False
                worker.summary.lost = str(lost)
                _show(ex, worker, "lost")
                try:
                    pool.ray.kill(worker.handle)
                except Exception:
                    pass
                back = lost.units
                async with cond:
                    placement.release(worker.name)
                    if back and not ex.stop.is_set():
                        placement.put_back(_key(batch), back)
                        requeued += len(back)
                    settle_retries()
                return
            finally:
                async with cond:
                    in_flight -= 1
                    cond.notify_all()

    waker = asyncio.create_task(wake_on_stop())
    try:
        await asyncio.gather(*(drive(w) for w in pool.workers))
    finally:
        waker.cancel()
        pool.stop()
    left = len([u for b in placement.remaining() for u in b]) + len(retry)
    ps.not_sent += left
    lost = [w for w in pool.workers if w.summary.lost]
    if lost:
        ex.summary.notes.append(
            f"{provider}: {len(lost)} Ray worker(s) lost ({'; '.join(f'{w.name}: {w.summary.lost}' for w in lost)}); "
            f"{requeued} generation(s) they held were re-queued to the others"
        )
    if split:
        ex.summary.notes.append(
            f"{provider}: out of GPU memory in a batch on a Ray worker: {split} generation(s) re-queued as single cells"
        )
    if oom_tried:
        ex.summary.notes.append(
            f"{provider}: {len(oom_tried)} generation(s) ran out of GPU memory alone on a Ray worker and were tried "
            f"on the others; {oom_failed} failed on every one"
        )
    if left and not ex.stop.is_set():
        ex.summary.fatal = ex.summary.fatal or (
            f"{provider}: every Ray worker was lost; {left} generation(s) not sent: run the same command again to resume"
        )
    if pool.shipper.files:
        ex.summary.notes.append(
            f"{provider}: {pool.shipper.files} LoRA file(s) ({_size(pool.shipper.bytes)}) shipped to Ray "
            f"workers through the object store (ship_loras: {pool.shipper.mode})"
        )
    elapsed = time.monotonic() - started
    cells = sum(w.summary.cells for w in pool.workers)
    ex.summary.notes.append(
        f"{provider}: {len(pool.workers)} Ray worker(s), {cells} cell(s) in {elapsed:.1f} s "
        f"({cells / elapsed if elapsed else 0:.2f} cells/s), "
        f"{sum(w.summary.lora_loads for w in pool.workers)} LoRA load(s)"
    )


def _size(n: int) -> str:
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n / 1024:.1f} KiB"


def _show(ex: Executor, worker: _Worker, activity: str, cells: int = 0) -> None:
    if ex.progress is not None and hasattr(ex.progress, "worker"):
        ex.progress.worker(worker.name, activity=activity, cells=cells)


async def _dispatch(ex: Executor, pool: RayPool, worker: _Worker, batch: list[Unit]) -> None:
    """One batch: reserve, intents committed, handed to the worker, results recorded; a dead
    worker closes the intents as `worker_lost` and raises `WorkerLost` (the caller re-queues)."""
    provider = batch[0].provider
    ps = ex.summary.providers[provider]
    reserved: list[Unit] = []
    for unit in batch:
        if ex.stop.is_set() or not await ex._reserve(unit):
            ps.not_sent += 1
            ex.stop.set()
            ex._wake_all()
            continue
        reserved.append(unit)
    if not reserved:
        return
    ready = [(unit, ex._write_intent(unit)) for unit in reserved]
    started = time.monotonic()
    _show(ex, worker, _activity(batch))
    try:
        reply = await ex._call(ready[0][0], ready[0][1], lambda: pool.call(worker, [u.request for u, _ in ready]))
    except WorkerLost as exc:
        for unit, gid in ready:
            ex.store.record_failure(gid, WORKER_LOST, redact(f"Ray worker {worker.name} was lost ({exc}); re-queued"),
                                    latency_s=time.monotonic() - started)
            ex._settle(unit, 0.0, learn=False)
        raise WorkerLost(str(exc), [u for u, _ in ready]) from None
    except asyncio.CancelledError:
        for unit, gid in ready:
            ex.store.record_failure(gid, INTERRUPTED, "stopped (Ctrl-C) before the batch finished")
        raise
    except Exception as exc:  # the reply did not come back (e.g. could not be unpickled)
        reply = {"results": [], "error": ("internal", one_line(f"{type(exc).__name__}: {exc}", 300)), "state": None}
    state = reply.get("state")
    if state:
        worker.loaded = set(state["loaded"])
        worker.summary.lora_loads = state["lora_loads"]
        worker.summary.file_loads = state["file_loads"]
        worker.summary.batches = state["batches"]
        worker.summary.busy_s = state["busy_s"]
    if reply.get("oom"):  # the worker freed its cache and lives on; the caller decides what is sent again
        raise OutOfMemory((reply.get("error") or ("", "out of GPU memory"))[1], ready, started)
    cells = sum(len(u.cells) for u, _ in ready)
    worker.summary.wall_s = time.monotonic() - pool.started
    worker.summary.generations += len(ready)
    worker.summary.cells += cells
    _show(ex, worker, "", cells)
    results = reply.get("results") or []
    error = reply.get("error")
    if error is None and len(results) != len(ready):
        error = (BadResponse.kind, f"the worker returned {len(results)} results for {len(ready)} requests")
    if error is not None:
        failure = ProviderError(provider, error[1])
        failure.kind = error[0]  # type: ignore[misc]  # the worker's kind, kept as it was
        for unit, gid in ready:
            ex._record_error(unit, gid, failure, started)
            ex._settle(unit, 0.0, learn=False)
            ps.failed += 1
            ex._advance(unit, failed=True)
        return
    for (unit, gid), result in zip(ready, results):
        result.metadata["ray_worker"] = worker.name
        await ex._spawn_finish(unit, gid, result, started, actual_is_new=True)
