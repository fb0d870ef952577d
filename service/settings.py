"""One settings object, read from the environment (and an optional `.env`).

The API, the worker, the CLI and the migrations all read `get_settings()`, so a
deployment is configured in exactly one way: `GRADSWEEP_*` variables.
"""

from functools import lru_cache

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GRADSWEEP_", env_file=".env", extra="ignore")

    # Embedded defaults: a SQLite file for results, and a SQLite file as Celery's
    # broker (kombu's SQLAlchemy transport), so one machine needs no server at all.
    database_url: str = "sqlite:///gradsweep.sqlite"
    broker_url: str = "sqla+sqlite:///gradsweep-broker.sqlite"
    # A write token that needs no database (named tokens with roles: `gradsweep token create`).
    api_token: str | None = None
    api_url: str = "http://127.0.0.1:8000"
    # The address `gradsweep api` listens on, and the names a request's Host may give besides the
    # loopback ones and that address: any other Host is refused, as a DNS-rebinding page sends it.
    api_host: str = "127.0.0.1"
    allowed_hosts: list[str] = []

    max_runs_per_sweep: int = Field(10_000, ge=1)
    max_epochs: int = Field(100_000, ge=1)
    # Runs × epochs of one sweep. The two limits above allow 10^9 losses (8 GB of float64 in the
    # database, some 50 GB of CSV); 10^8 (800 MB) still lets the largest sweep train 10,000 epochs, and a
    # 100,000-epoch sweep 1,000 runs. Reads are streamed whatever this is (issue 22): it bounds disk and export time.
    max_losses_per_sweep: int = Field(100_000_000, ge=1)

    worker_concurrency: int | None = Field(None, ge=1)
    # Training processes run at this niceness, so that an API on the same machine answers first.
    worker_nice: int = Field(10, ge=0, le=19)

    # A sweep's runs that differ only in learning rate and seed train together, as one
    # computation, in jobs of at most this many runs, and of at most job_memory_bytes of
    # arrays; and in at least min_jobs_per_sweep jobs, so that as many worker processes share it.
    max_runs_per_job: int = Field(500, ge=1)
    min_jobs_per_sweep: int = Field(2, ge=1)
    job_memory_bytes: int = Field(256 * 2**20, ge=2**20)

    # A running run whose worker has written nothing for this long is taken back and
    # queued again (workers write at least every 0.5 s), up to max_attempts attempts.
    run_lease_seconds: float = Field(10.0, gt=0)
    max_attempts: int = Field(3, ge=1)

    max_request_bytes: int = Field(1_048_576, ge=1024)
    # Processes serving the API (uvicorn's workers): one per core for many dashboard users.
    api_processes: int = Field(1, ge=1)
    # Each API process keeps sweeps' encoded curves, up to this many bytes (service/api/curve_cache.py).
    curve_cache_bytes: int = Field(512 * 2**20, ge=0)
    # Origins allowed to call the API from a browser page of their own; none by default.
    cors_origins: list[str] = []


@lru_cache
def get_settings() -> Settings:
    return Settings()
