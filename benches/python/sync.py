"""Python's multiprocessing doing the work of benches/sync.rs, for the ratios.

Run by `cargo bench --bench sync` when python3 is found; can also be run alone:
    python3 benches/python/sync.py [n]
Prints one JSON object per line: {"name": ..., "value": ..., "unit": ...}.
"""
import json
import multiprocessing as mp
import os
import sys
import time


def report(name, value, unit):
    print(json.dumps({"name": name, "value": value, "unit": unit}), flush=True)


def line_up(cpu, start):
    """Pins this process to `cpu`, waits at `start` with the parent and the other
    child, and starts the clock."""
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    start.wait()
    return time.perf_counter()


def contend(lock, n, start, cpu, times):
    t = line_up(cpu, start)
    for _ in range(n):
        lock.acquire()
        lock.release()
    times.put(time.perf_counter() - t)


def bounce(mine, theirs, n):
    for _ in range(n):
        theirs.wait()
        theirs.clear()
        mine.set()


def increment(v, n, start, cpu, times):
    t = line_up(cpu, start)
    for _ in range(n):
        with v.get_lock():
            v.value += 1
    times.put(time.perf_counter() - t)


def two_children(child, shared, n, cpus):
    """Runs `child` in two processes placed at `cpus`, lined up at one barrier with
    this one; the slower child's time, s."""
    start, times = mp.Barrier(3), mp.Queue()
    ps = [mp.Process(target=child, args=(shared, n, start, cpu, times)) for cpu in cpus]
    for p in ps:
        p.start()
    start.wait()
    slowest = max(times.get(), times.get())
    for p in ps:
        p.join()
    return slowest


def placements():
    """(row suffix, CPU of each child), as in benches/sync.rs."""
    usable = sorted(os.sched_getaffinity(0))
    yield "", [None, None]
    yield "_one_cpu", [usable[0], usable[0]]
    if len(usable) >= 2:
        yield "_two_cpus", usable[:2]


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000

    lock = mp.Lock()
    t0 = time.perf_counter()
    for _ in range(n):
        lock.acquire()
        lock.release()
    report("lock_uncontended", (time.perf_counter() - t0) / n * 1e9, "ns")

    for suffix, cpus in placements():
        secs = two_children(contend, mp.Lock(), n, cpus)
        report("lock_contended_2" + suffix, secs / (2 * n) * 1e9, "ns")

    trips = max(n // 50, 100)
    a, b = mp.Event(), mp.Event()
    p = mp.Process(target=bounce, args=(b, a, trips))
    p.start()
    t0 = time.perf_counter()
    for _ in range(trips):
        a.set()
        b.wait()
        b.clear()
    report("event_round_trip", (time.perf_counter() - t0) / trips * 1e6, "us")
    p.join()

    for suffix, cpus in placements():
        v = mp.Value("q", 0)
        secs = two_children(increment, v, n, cpus)
        assert v.value == 2 * n
        report("value_increments_2" + suffix, 2 * n / secs, "ops/s")


if __name__ == "__main__":
    main()
