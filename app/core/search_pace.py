"""How many more searches the cluster can take on: the pace searches end at, and the wait a
new one would have (issue 26 item 3). Pure: the job supervisor feeds it its submissions and
ends, and answers every ingress replica's admission question from it.

The pace is read on a busy clock that runs only while a search is in flight. A quiet hour
between two searches then does not read as a slow cluster, and under load it is the
cluster's throughput: N searches that end within B busy seconds take B / N seconds each,
however many of them ran side by side.

A search handed to Ray also needs a worker process. While idle workers are there it starts
within a second; when none is, Ray starts one, and on a small node every search admitted
meanwhile starts another. The soak's first seconds admitted seven searches at the pace of
the first solo ones, Ray started 8-14 worker processes on 2 cores at once, and those seven
searches waited 27-55 s to start (issue 26). So a search that has waited longer than a grace
to start holds admission back until it starts: the pool grows a worker at a time.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

# Before any search has ended on this cluster: about one search on a small, busy node.
UNTIMED_SEARCH_S = 10.0


@dataclass
class SearchPace:
    """Searches in flight, and the busy seconds per search over the last ``window`` ends."""

    window: int = 20
    in_flight: int = 0
    busy_s: float = 0.0  # the busy clock when ``in_flight`` last changed
    changed_at: float = 0.0  # monotonic time of that change
    ends: deque[float] = field(default_factory=deque)  # the busy clock at each counted end
    waiting: dict[str, float] = field(default_factory=dict)  # job_id -> when it was handed to Ray, until it runs

    def __post_init__(self) -> None:
        self.ends = deque([0.0], maxlen=self.window + 1)

    def clock(self, now: float) -> float:
        """The busy clock at ``now``: seconds during which at least one search was in flight."""
        return self.busy_s + (max(0.0, now - self.changed_at) if self.in_flight > 0 else 0.0)

    def started(self, now: float, job_id: str | None = None) -> None:
        """A search was handed to Ray (with its ``job_id``: waiting for a worker until ``running``)."""
        self.busy_s, self.changed_at = self.clock(now), now
        self.in_flight += 1
        if job_id is not None:
            self.waiting[job_id] = now

    def running(self, job_id: str) -> None:
        """The job began to run in a worker."""
        self.waiting.pop(job_id, None)

    def longest_wait_s(self, now: float, up_to_s: float = float("inf")) -> float:
        """How long the search waiting longest for a worker has waited (0: none waits). Waits
        longer than ``up_to_s`` are left out: such a job will never run (its record was failed
        at the request deadline; Ray may hold an infeasible task forever), and must not hold
        admission back for good."""
        return max((w for t in self.waiting.values() if (w := now - t) <= up_to_s), default=0.0)

    def ended(self, now: float, counted: bool = True, job_id: str | None = None) -> None:
        """A search ended (its job returned or died). ``counted=False``: it was cancelled, and
        says nothing about the pace."""
        if job_id is not None:
            self.waiting.pop(job_id, None)
        if self.in_flight == 0:
            return
        self.busy_s, self.changed_at = self.clock(now), now
        self.in_flight -= 1
        if counted:
            self.ends.append(self.busy_s)

    def per_search_s(self) -> float | None:
        """Busy seconds per ended search over the window; None before one ended."""
        if len(self.ends) < 2:
            return None
        return max(0.0, self.ends[-1] - self.ends[0]) / (len(self.ends) - 1)


def admission_wait_s(
    in_flight: int,
    per_search_s: float | None,
    target_s: float,
    cap: int,
    longest_wait_s: float = 0.0,
    start_grace_s: float = float("inf"),
) -> float:
    """0 when one more search can start now; else the seconds until one likely can.

    One more search would end after about ``(in_flight + 1) * per_search_s`` (the ones ahead,
    then itself, at the cluster's pace). It is admitted while that is within ``target_s``
    and fewer than ``cap`` are in flight; a search alone on the cluster is always admitted.
    The wait is how long the searches ahead take to drain to where it would be.

    A search that has waited ``longest_wait_s`` for a worker, past ``start_grace_s``, means
    the cluster is starting worker processes: none is admitted until it runs, and the wait
    is at least the grace."""
    if in_flight <= 0:
        return 0.0
    pace = UNTIMED_SEARCH_S if per_search_s is None else per_search_s
    over_target = (in_flight + 1) * pace - target_s
    over_cap = (in_flight - cap + 1) * pace
    no_worker = start_grace_s if longest_wait_s > start_grace_s else 0.0
    return max(0.0, over_target, over_cap if in_flight >= cap else 0.0, no_worker)
