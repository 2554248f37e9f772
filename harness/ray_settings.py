"""Which executor a provider's generations run on, and how a Ray one is shaped.

A provider whose config includes these fields (the local `diffusers` provider) can run its
grid on a Ray cluster: `providers: [{diffusers: {executor: ray, workers: 2}}]` in a suite, or
`lorascope run SUITE --ray` / `--ray-address ADDRESS` for every such provider. Kept apart from the executor
itself so a provider's config can name it without importing Ray (or anything heavy).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field, field_validator

from lorascope.harness.providers.base import ProviderConfig

#: `--ray` without `--ray-address`: ray.init() finds RAY_ADDRESS or the instance running here, else starts one.
LOCAL = "local"


class ExecutorSettings(ProviderConfig):
    """Config fields of a provider that can run on Ray (none of them enters a fingerprint:
    the same request gives the same image on whichever worker runs it)."""

    executor: Literal["local", "ray"] = Field(
        default="local", description="local: in this process; ray: one Ray actor per GPU (or CPU slot)"
    )
    workers: int | None = Field(default=None, ge=1, description="Ray workers; None = one per GPU (else per CPU slot)")
    gpus_per_worker: float | None = Field(
        default=None, ge=0, description="GPUs each Ray worker holds; None = 1 when the cluster has GPUs, else 0"
    )
    cpus_per_worker: float = Field(default=1.0, gt=0, description="CPUs each Ray worker holds")
    threads_per_worker: int | None = Field(
        default=None, ge=1,
        description="torch CPU threads per worker; None = on GPU workers one per CPU held, on CPU workers "
        "torch's own default, as in a single-process run (on CPU the thread count changes the last bits "
        "of the pixels)",
    )
    ray_address: str | None = Field(
        default=None, description="cluster to join (ray://host:10001, host:6379, auto); None = start a local one"
    )
    ship_loras: Literal["auto", "always", "never"] = Field(
        default="auto",
        description="LoRA bytes to Ray workers through Ray's object store: auto = only the files a worker cannot "
        "read at the request's path (or finds other bytes there); always = every worker loads from its own "
        "cache folder; never = the files must be at the same paths on every node",
    )
    lora_cache: str | None = Field(
        default=None,
        description="folder on each worker's node where shipped LoRA files are kept by sha256; None = "
        "$LORASCOPE_RAY_LORA_CACHE, else ray-loras in the user cache folder",
    )

    @field_validator("lora_cache")
    @classmethod
    def _absolute_cache(cls, value: str | None) -> str | None:
        """A folder on each worker's node: a relative path would depend on where Ray starts a worker."""
        if value is not None and not value.startswith("~") and not value.startswith("/") and ":" not in value[:3]:
            raise ValueError(f"{value!r} is relative; give an absolute folder (or ~/...) on each worker's node")
        return value


@dataclass(frozen=True)
class RayChoice:
    """A provider's generations go to Ray: where, and how many workers of what size."""

    address: str | None  # None: start a local instance (unless Ray is already initialised)
    workers: int | None
    gpus_per_worker: float | None
    cpus_per_worker: float
    threads_per_worker: int | None = None
    ship_loras: str = "auto"
    lora_cache: str | None = None


def ray_choice(config: Any, cli_ray: str | None) -> RayChoice | None:
    """The Ray shape for a provider, or None when it runs in-process.

    `cli_ray` is `--ray-address` (`LOCAL` for a bare `--ray`): it sends every provider that
    can run on Ray there, and its address wins over the suite's `ray_address`."""
    if not isinstance(config, ExecutorSettings):
        return None
    if cli_ray is None and config.executor != "ray":
        return None
    address = cli_ray if cli_ray not in (None, LOCAL) else config.ray_address
    return RayChoice(address=address or None, workers=config.workers, gpus_per_worker=config.gpus_per_worker,
                     cpus_per_worker=config.cpus_per_worker, threads_per_worker=config.threads_per_worker,
                     ship_loras=config.ship_loras, lora_cache=config.lora_cache)
