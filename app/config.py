"""The online side's settings: pipeline settings plus the HTTP service's own section.

``AppSettings`` extends ``pipelines.config.Settings`` (same YAML file, same
``FACEREEL_*`` environment rules) with ``api``. It is built once, in the process that
builds the Serve application or runs the CLI, and travels to replicas and Ray tasks as
a pickled object: a worker never re-reads the environment (see ``pipelines.config``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from pipelines.config import Settings, load_settings


class ApiSettings(BaseModel):
    """The HTTP service (Ray Serve). Replicas and resources live in serve_config.yaml."""

    # Clip URLs are <public_base_url>/media/<key>; in the default setup the API serves them.
    public_base_url: str = "http://127.0.0.1:8000"
    # Orgs, events, API keys and search requests (LanceDB; local path or s3://).
    control_uri: str = ""
    # Where clips go unless an event names its own output location.
    output_root: str = ""
    max_upload_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)
    # A request body (form or JSON) must arrive within this many seconds, else 408: a client
    # that sends less than its Content-Length, or trickles, cannot hold a replica.
    body_timeout_s: float = Field(default=30.0, gt=0.0)
    # The longest clip a client may ask for after a search (POST .../clips, max_duration_s).
    max_extra_clip_s: float = Field(default=60.0, gt=0.0)
    # Selfies one search may carry (each must show a face); more photos find more.
    max_selfies: int = Field(default=5, ge=1)
    # Face Search and BIB search answer photos a page at a time.
    page_size: int = Field(default=50, ge=1)
    max_page_size: int = Field(default=200, ge=1)
    # Longer side of the photo thumbnails served next to each photo (made on first request).
    thumbnail_px: int = Field(default=400, ge=32, le=2048)
    # A search whose job has not started within this long after its record was written is
    # failed (the replica died before dispatching it, or its worker never started); once
    # the job has started (its first write), request_deadline_s applies.
    dispatch_deadline_s: float = Field(default=30.0, gt=0.0)
    # Admission control, per ingress replica: requests handled at once (more are answered 503
    # with Retry-After at once instead of queueing), selfies being embedded, and search jobs
    # running. Chosen with bench/load.py on 2 cores (BENCHMARKS.md): 16 reads halve the GET
    # p50 of 32 (0.44 s against 1.0 s at 200 clients), and a 4 s Retry-After keeps the
    # shed clients' retries from filling the proxy (1 s: accepted GET p50 2.4 s).
    max_concurrent_reads: int = Field(default=16, ge=1)
    max_concurrent_writes: int = Field(default=8, ge=1)
    # Reads admitted while a write is in progress (None: max_concurrent_reads): writes first.
    # On 2 busy cores, 2 cut accepted GET p99 from 4.6-8.9 s to 1.1-2.1 s and POST p50 from
    # 21-26 s to 15-17 s under 200 readers and POST bursts (BENCHMARKS.md, issue 10); off by
    # default, as with steady POST traffic it sheds most reads.
    max_concurrent_reads_while_writing: int | None = Field(default=None, ge=1)
    # The same admission in Serve's HTTP proxy, per proxy (one per node), before a request is
    # routed to a replica (app/http/proxy_envelope.py); 0: no bound. The proxy is not given the
    # app's arguments: it loads $FACEREEL_CONFIG and FACEREEL_API__* itself (facereel serve
    # sets FACEREEL_CONFIG from --config). Chosen with bench/load.py (BENCHMARKS.md, issue 10).
    proxy_max_reads: int = Field(default=16, ge=0)
    proxy_max_writes: int = Field(default=4, ge=0)
    # Reads the proxy admits while a write passes through it (0: proxy_max_reads): writes
    # first, so that a POST's few steps do not wait behind a full house of readers.
    proxy_max_reads_while_writing: int = Field(default=4, ge=0)
    # Polls (GET of one search or index job, app/http/admission.py POLLED) have bounds of their
    # own, in the replica and in the proxy (0: they count as reads): a finished record is
    # served from memory and, unchanged, answered 304, so 50 pollers on 2 cores need no
    # shedding (bench/poll.py), while expensive reads keep the bounds above. 128, not 64: 50
    # closed-loop pollers were seen as 64 in progress (a request is counted until its response
    # has streamed out, while its client already sent the next), and were shed.
    max_concurrent_polls: int = Field(default=128, ge=0)
    proxy_max_polls: int = Field(default=128, ge=0)
    # Workers of the search tasks' pool each ingress replica starts before it reports ready
    # (a search and one clip per video run at once): a first search then starts no process
    # (issue 21: 22.5 s against a warm p50 of 1.7-2.3 s). 0: none. Waited for at most
    # warm_timeout_s; a warm-up that fails or takes longer is logged, and serving starts.
    warm_search_workers: int = Field(default=3, ge=0)
    warm_timeout_s: float = Field(default=120.0, gt=0.0)
    max_pending_embeds: int = Field(default=8, ge=1)
    max_running_searches: int = Field(default=16, ge=1)
    # Searches in flight (submitted, not ended) on the whole cluster, counted by the job
    # supervisor: one more POST is answered 503 with a Retry-After from the queue's length
    # and recent searches' times, so an admitted search never waits behind a backlog it
    # cannot get through (issue 26: unbounded, POST -> terminal reached p95 605 s on 2 cores).
    max_searches_in_flight: int = Field(default=8, ge=1)
    # ... and one more is admitted only while it would likely end within this many seconds
    # at the pace searches end at on the cluster (app/core/search_pace.py), so an accepted search
    # reaches its terminal status in about this time, kills aside (issue 26: p95 <= 60 s;
    # with a bound of 8 alone, the 2-core soak's accepted searches took p50 116 s).
    search_target_s: float = Field(default=40.0, gt=0.0)
    # ... and none is admitted while a search has waited longer than this for a worker
    # process to run in: Ray is starting workers, and each search admitted meanwhile would
    # start another (issue 26: seven at once waited 27-55 s on 2 cores). A warm worker takes
    # its job within a second.
    search_start_grace_s: float = Field(default=3.0, gt=0.0)
    retry_after_s: float = Field(default=4.0, gt=0.0)
    # Threads for blocking storage calls (LanceDB, files) per replica: a few more than
    # asyncio's cpus + 4, so one slow table commit does not stall every request; many more
    # only contend (bench/load.py on 2 cores: 6 threads 133 GET/s, 32 threads 116).
    io_threads: int = Field(default=8, ge=1)
    # ... and threads for writes' blocking calls, so that a search's few writes never queue
    # behind the readers' (app/obs/io_threads.py).
    io_write_threads: int = Field(default=4, ge=1)
    # OS niceness of a search's Ray task workers (run_search, clips; app/obs/background.py), so
    # that serving preempts them on a shared node. 0: they run at the serving priority.
    search_task_nice: int = Field(default=10, ge=0, le=19)
    # CPUs a search job (run_search) reserves while it runs; 0: none (it mostly waits on its
    # clipping tasks, which reserve clip.num_cpus each). A job waiting in Ray's queue for
    # them is not lost: it is failed only if it never reached Ray (dispatch_deadline_s).
    search_job_cpus: float = Field(default=0.0, ge=0.0)
    # A search still processing after this long is failed (its worker is presumed lost).
    request_deadline_s: float = Field(default=600.0, gt=0.0)
    # How often each ingress replica checks the search jobs it started: one whose worker
    # died is failed at once rather than at the deadline.
    job_watch_interval_s: float = Field(default=1.0, gt=0.0)
    # How often each ingress replica sweeps for overdue searches.
    sweep_interval_s: float = Field(default=30.0, gt=0.0)
    # How long a replica may reuse an API key or event it has read (a revoked key or a
    # toggled feature takes effect within this time). 0 disables the cache.
    auth_cache_s: float = Field(default=5.0, ge=0.0)
    # Finished search results each replica keeps for polling GETs (app/store/result_cache.py:
    # served only while no control table was written since; never stale). 0 disables it.
    result_cache_entries: int = Field(default=10_000, ge=0)
    # How often control tables are compacted, indexed and pruned of old versions, and after
    # how many searches started by a replica (each search adds table versions and fragments;
    # point reads slow from ~4 ms at 20 searches to ~130 ms at 1,000 without it).
    maintenance_interval_s: float = Field(default=600.0, gt=0.0)
    maintenance_every_searches: int = Field(default=100, ge=1)
    # Token buckets per API key, shared by all replicas: sustained rate and burst.
    post_per_minute: float = Field(default=30.0, gt=0.0)
    post_burst: int = Field(default=10, ge=1)
    get_per_minute: float = Field(default=600.0, gt=0.0)
    get_burst: int = Field(default=100, ge=1)
    # Each replica takes a busy key's tokens from the shared buckets a few at a time (at most
    # rate_lease_max, what the key earns in rate_lease_s, a tenth of its burst) and spends
    # them locally for up to rate_lease_s: one actor call per lease, not per request. 0: none.
    # 5 s, not 1: a poller at a few requests a second (one key each) spent a 1 s lease's first
    # few tokens and let it expire, so one poll in three called the actor (bench/poll.py: 0.74x
    # /healthz, 0.91x at 5 s). Tokens held past need stay at most a lease per replica.
    rate_lease_s: float = Field(default=5.0, ge=0.0)
    rate_lease_max: int = Field(default=50, ge=1)
    # Consent: an event's searches are deleted this long after their last change unless it sets its own (None: kept).
    retention_days: int | None = Field(default=None, ge=1)
    # Retention is counted in days: looking for expired searches more often than this is wasted work.
    retention_sweep_interval_s: float = Field(default=600.0, gt=0.0)
    # Clip files no record references are removed only past this age: younger ones may be about to be recorded.
    orphan_grace_s: float = Field(default=3600.0, ge=0.0)
    # Listing every event's clip folders is costly on s3://, so it runs at most this often per replica.
    orphan_sweep_interval_s: float = Field(default=600.0, gt=0.0)
    # Media over HTTP: uploads land in the event's source location (its source_uri, else
    # <source_root>/<org>/<event>); registered URIs must lie under one of media_roots or that
    # location. Uploads are spooled to disk, never held in memory.
    source_root: str = ""
    # Every org may register media under these: write {org_id} (and {event_id}) into a root,
    # e.g. /srv/media/{org_id}, to give each org its own folder.
    media_roots: list[str] = Field(default_factory=list)
    max_media_upload_bytes: int = Field(default=4 * 1024**3, ge=1024)
    max_media_files: int = Field(default=20, ge=1)  # per upload request
    max_media_uris: int = Field(default=100, ge=1)  # per registration request
    # Where uploads are spooled before they are stored ('' = the system's temp folder): it
    # must hold max_media_files x max_media_upload_bytes per concurrent upload, on disk.
    upload_spool_dir: str = ""
    # A running index job's driver writes a heartbeat every index_job_heartbeat_s; a job
    # whose record has not been touched for index_job_deadline_s is taken for lost and ended
    # by any replica's sweep (the replica that started it notices a dead driver at once).
    # Until the job is handed to Ray, dispatch_deadline_s applies.
    index_job_deadline_s: float = Field(default=300.0, gt=0.0)
    index_job_heartbeat_s: float = Field(default=10.0, gt=0.0)
    # How often a running index job writes its progress to its record.
    index_progress_interval_s: float = Field(default=0.5, gt=0.0)
    # Webhooks: signed POSTs of a job's or search's final result (app/core/webhooks.py), retried
    # with backoff. Only public addresses receive them unless kinds are allowed here
    # ("loopback", "private", "link-local", "shared (carrier-grade NAT)", ...): a webhook to an
    # internal address would let a client probe the cluster's network (SSRF).
    webhook_attempts: int = Field(default=5, ge=1, le=20)
    webhook_first_backoff_s: float = Field(default=2.0, ge=0.0)
    webhook_timeout_s: float = Field(default=10.0, gt=0.0)
    webhook_allow_addresses: list[str] = Field(default_factory=list)
    # The same rule for the endpoints of an org's own storage locations: the service connects
    # to an endpoint a client names.
    storage_allow_addresses: list[str] = Field(default_factory=list)
    # Whether a location may use a profile or the servers' environment credentials instead of
    # its own keys: only where every org may use the service's own credentials.
    storage_server_credentials: bool = False


class AppSettings(Settings):
    api: ApiSettings = ApiSettings()

    @property
    def control_uri(self) -> str:
        return self.api.control_uri or str(Path(self.data_dir) / "control")

    @property
    def output_root(self) -> str:
        return self.api.output_root or str(Path(self.data_dir) / "outputs")

    @property
    def source_root(self) -> str:
        return self.api.source_root or str(Path(self.data_dir) / "sources")

    def pinned(self) -> AppSettings:
        """Relative local data paths made absolute: replicas and tasks may start in another
        working directory."""
        return self.model_copy(update={"data_dir": str(Path(self.data_dir).expanduser().resolve())})


def load_app_settings(path: str | os.PathLike[str] | None = None, **overrides: Any) -> AppSettings:
    """``load_settings`` for the online side: the YAML file, env overrides, ``api`` included."""
    return load_settings(path, settings_cls=AppSettings, **overrides)
