"""Simulation paths on the warm workers: the chunk plan, the fan-out, the exact merge.

A simulation request is a :class:`~compute.simulation.paths.Job` cut into fixed-size chunks
(the chunk size comes from the path count alone, never from the number of workers) and chunk
``i`` draws from ``fold_in(key(seed), i)``. Calls take contiguous ranges of chunks; each
returns an :class:`~compute.simulation.paths.Accumulator` of integer histograms and
fixed-point sums, whose merge is exact, so 1, 2, 4 or 64 workers give the same bits.

The job (source returns, tables) is ``ray.put`` once; each call is a few chunks (>= ~100 ms)
so the round trip is noise; a request smaller than ``LOCAL_BELOW`` path-steps runs in this
process (a fan-out would cost more than it saves).
"""

from __future__ import annotations

import math
from collections.abc import Callable

from compute.simulation.paths import Accumulator, Job, run_chunks
from serve_app.execution.fanout import fan_out, ray_running
from serve_app.execution.runs import NO_RUN, RunContext

Progress = Callable[[int, int], None]
LOCAL_BELOW = 50_000_000  # path-steps: ~0.1 s of kernel in one process


def _chunk_task(job: Job, span: tuple[int, int]) -> Accumulator:
    return run_chunks(job, span[0], span[1])


def plan(n_chunks: int, n_tasks: int) -> list[tuple[int, int]]:
    """Contiguous chunk ranges ``[start, stop)`` for ``n_tasks`` tasks (sizes differ by <= 1)."""
    n_tasks = max(1, min(n_tasks, n_chunks))
    base, extra = divmod(n_chunks, n_tasks)
    ranges, start = [], 0
    for i in range(n_tasks):
        stop = start + base + (1 if i < extra else 0)
        ranges.append((start, stop))
        start = stop
    return ranges


def default_tasks(n_chunks: int, workers: int, chunks_per_task: int = 16) -> int:
    """Two calls per worker (one computing, one queued), more when a call would get over
    ``chunks_per_task`` chunks (progress and cancel points), never more than the chunks."""
    return max(1, min(n_chunks, max(2 * workers, math.ceil(n_chunks / chunks_per_task))))


def run(
    job: Job,
    *,
    tasks: int | None = None,
    use_ray: bool | None = None,
    on_progress: Progress | None = None,
    ctx: RunContext = NO_RUN,
) -> tuple[Accumulator, dict[str, object]]:
    """Every chunk of ``job``, merged in chunk order; and how it ran (see ``fan_out``)."""
    if use_ray is None:
        use_ray = ray_running() and job.paths * job.layout.horizon >= LOCAL_BELOW
    workers = 1
    if use_ray:
        from serve_app.execution.workers import pool

        workers = max(1, len(pool().workers()))
    n_tasks = (
        tasks
        if tasks is not None
        else (default_tasks(job.n_chunks, workers) if use_ray else math.ceil(job.n_chunks / 32))
    )
    ranges = plan(job.n_chunks, n_tasks)
    chunk = job.layout.chunk
    finished = [0]

    def done(i: int, _acc: Accumulator) -> None:
        start, stop = ranges[i]
        finished[0] += min(job.paths, stop * chunk) - start * chunk
        ctx.progress(finished[0], job.paths)
        if on_progress is not None:
            on_progress(finished[0], job.paths)

    parts, how = fan_out(_chunk_task, ranges, job, use_ray=use_ray, on_done=done, ctx=ctx)
    # results from the object store are read-only views: merge into a fresh accumulator
    total = Accumulator(job.layout.horizon, len(job.layout.fan_steps))
    for part in parts:
        total.merge(part)
    return total, how
