"""The Ray fan-out of ``compute`` (the one module here that touches Ray; DESIGN.md).

A simulation request is a :class:`~compute.simulation.paths.Job` cut into fixed-size chunks (the
chunk size comes from the path count alone, never from the number of workers) and chunk
``i`` draws from ``fold_in(key(seed), i)``. Tasks take contiguous ranges of chunks; each
returns an :class:`~compute.simulation.paths.Accumulator` of integer histograms and fixed-point
sums, whose merge is exact, so 1, 2, 4 or 64 tasks give the same bits.

Ray practice: the job (source returns, tables) is ``ray.put`` once and every task gets the
reference; at most ``max_in_flight`` tasks are outstanding (``ray.wait`` one at a time), so
a huge request never floods the scheduler; tasks are sized to a few chunks (>= ~100 ms) and
run in long-lived workers that keep the compiled kernel per layout.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import ray

from compute.simulation.paths import Accumulator, Job, run_chunks

Progress = Callable[[int, int], None]


# XLA:CPU splits large loops over a thread pool the size of the machine; with one task per
# core that oversubscribes every core and costs ~20 % (measured on 2 cores: 449-524 vs 359-419
# M path-steps/s). Workers of this task run with single-threaded XLA.
WORKER_XLA_FLAGS = (
    "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1 "
    "--xla_cpu_parallel_codegen_split_count=1"
)


@ray.remote(num_cpus=1, runtime_env={"env_vars": {"XLA_FLAGS": WORKER_XLA_FLAGS}})
def _run_chunks(job: Job, start: int, stop: int) -> Accumulator:
    return run_chunks(job, start, stop)


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


def default_tasks(n_chunks: int, cpus: int, chunks_per_task: int = 64) -> int:
    """One task per CPU (measured faster than two: each task has fixed costs), more when a
    task would get over ``chunks_per_task`` chunks (progress reports), never more than
    there are chunks."""
    return max(1, min(n_chunks, max(cpus, math.ceil(n_chunks / chunks_per_task))))


def run(
    job: Job,
    *,
    tasks: int | None = None,
    max_in_flight: int | None = None,
    on_progress: Progress | None = None,
    options: dict[str, Any] | None = None,
) -> Accumulator:
    """Run every chunk of ``job`` as Ray tasks (Ray must be initialised) and merge."""
    cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
    n_tasks = tasks if tasks is not None else default_tasks(job.n_chunks, cpus)
    ranges = plan(job.n_chunks, n_tasks)
    limit = max_in_flight if max_in_flight is not None else max(2, 2 * cpus)
    remote = _run_chunks.options(**options) if options else _run_chunks
    job_ref = ray.put(job)
    chunk = job.layout.chunk
    pending: dict[Any, int] = {}
    done: dict[int, Accumulator] = {}
    finished_paths = 0

    def collect(num: int) -> None:
        nonlocal finished_paths
        ready, _ = ray.wait(list(pending), num_returns=num)
        for ref in ready:
            i = pending.pop(ref)
            done[i] = ray.get(ref)
            start, stop = ranges[i]
            finished_paths += min(job.paths, stop * chunk) - start * chunk
            if on_progress is not None:
                on_progress(finished_paths, job.paths)

    for i, (start, stop) in enumerate(ranges):
        while len(pending) >= limit:
            collect(1)
        pending[remote.remote(job_ref, start, stop)] = i
    while pending:
        collect(1)
    # results from the object store are read-only views: merge into a fresh accumulator
    total = Accumulator(job.layout.horizon, len(job.layout.fan_steps))
    for i in range(len(ranges)):
        total.merge(done[i])
    return total


def run_local(job: Job, on_progress: Progress | None = None) -> Accumulator:
    """Every chunk in this process, one after another (no Ray): small requests and tests."""
    if on_progress is None:
        return run_chunks(job, 0, job.n_chunks)
    acc = Accumulator(job.layout.horizon, len(job.layout.fan_steps))
    step = 32  # progress every 32 chunks
    for start in range(0, job.n_chunks, step):
        stop = min(job.n_chunks, start + step)
        acc.merge(run_chunks(job, start, stop))
        on_progress(min(job.paths, stop * job.layout.chunk), job.paths)
    return acc
