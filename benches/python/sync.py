"""Python's multiprocessing doing the work of benches/sync.rs, for the ratios.

Run by `cargo bench --bench sync` when python3 is found; can also be run alone:
    python3 benches/python/sync.py [n]
Prints one JSON object per line: {"name": ..., "value": ..., "unit": ...}.
"""
import json
import multiprocessing as mp
import sys
import time


def report(name, value, unit):
    print(json.dumps({"name": name, "value": value, "unit": unit}), flush=True)


def contend(lock, n, start):
    start.wait()
    for _ in range(n):
        lock.acquire()
        lock.release()


def bounce(mine, theirs, n):
    for _ in range(n):
        theirs.wait()
        theirs.clear()
        mine.set()


def increment(v, n, start):
    start.wait()
    for _ in range(n):
        with v.get_lock():
            v.value += 1


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000

    lock = mp.Lock()
    t0 = time.perf_counter()
    for _ in range(n):
        lock.acquire()
        lock.release()
    report("lock_uncontended", (time.perf_counter() - t0) / n * 1e9, "ns")

    start = mp.Event()
    ps = [mp.Process(target=contend, args=(lock, n, start)) for _ in range(2)]
    for p in ps:
        p.start()
    t0 = time.perf_counter()
    start.set()
    for p in ps:
        p.join()
    report("lock_contended_2", (time.perf_counter() - t0) / (2 * n) * 1e9, "ns")

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

    v = mp.Value("q", 0)
    start = mp.Event()
    ps = [mp.Process(target=increment, args=(v, n, start)) for _ in range(2)]
    for p in ps:
        p.start()
    t0 = time.perf_counter()
    start.set()
    for p in ps:
        p.join()
    assert v.value == 2 * n
    report("value_increments_2", 2 * n / (time.perf_counter() - t0), "ops/s")


if __name__ == "__main__":
    main()
