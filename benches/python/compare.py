"""The Python side of `cargo bench --bench compare`: the same workloads on
concurrent.futures.ProcessPoolExecutor and multiprocessing.Pool (fork start method,
Python's default on Linux). Prints one JSON object per line: name, value, unit.

    python3 benches/python/compare.py [--quick]
"""

import json
import multiprocessing as mp
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor

QUICK = "--quick" in sys.argv


def emit(name, value, unit):
    print(json.dumps({"name": name, "value": value, "unit": unit}), flush=True)


def trivial(x):
    return (x * 2654435761) & 0xFFFFFFFFFFFFFFFF


def echo(b):
    return b


def spin(n):
    # The same LCG as the Rust side; n is calibrated by the caller to ~10 ms here.
    x = 1
    for _ in range(n):
        x = (x * 6364136223846793005 + 1442695040888963407) & 0xFFFFFFFFFFFFFFFF
    return x


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def children(pid):
    out = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out += [int(p) for p in f.read().split()]
        except OSError:
            pass
    return out


def main():
    ctx = mp.get_context("fork")

    # Memory: RSS of 2 idle workers (first, before this script holds any payload).
    with ProcessPoolExecutor(2, mp_context=ctx) as ex:
        list(ex.map(trivial, range(2)))
        kids = children(os.getpid())
        emit("mem_idle_workers_ppe", sum(rss_kib(p) for p in kids) / 1024, "MiB")

    # W1: sequential submit + result.
    n = 500 if QUICK else 2000
    with ProcessPoolExecutor(1, mp_context=ctx) as ex:
        ex.submit(trivial, 1).result()
        t = time.perf_counter()
        for i in range(n):
            ex.submit(trivial, i).result()
        emit("w1_round_trip_ppe", (time.perf_counter() - t) / n * 1e6, "us")
        # Each round trip on its own, for the latency plot.
        samples = []
        for i in range(n * 5):
            t = time.perf_counter()
            ex.submit(trivial, i).result()
            samples.append((time.perf_counter() - t) * 1e6)
        samples.sort()
        for q, name in ((0.5, "p50"), (0.9, "p90"), (0.99, "p99"), (0.999, "p999")):
            emit(f"w1_ppe_{name}", samples[round((len(samples) - 1) * q)], "us")

    # W2: many trivial tasks.
    n = 200_000 if QUICK else 1_000_000
    with ctx.Pool(2) as pool:
        pool.map(trivial, range(1000))
        t = time.perf_counter()
        pool.map(trivial, range(n))
        emit("w2_pool_map", n / (time.perf_counter() - t), "tasks/s")
    # map against the number of workers, for the throughput plot.
    for workers in (1, 2, 4):
        with ctx.Pool(workers) as pool:
            pool.map(trivial, range(1000))
            t = time.perf_counter()
            pool.map(trivial, range(n))
            emit(f"map_pool_{workers}", n / (time.perf_counter() - t), "tasks/s")
    n = 5_000 if QUICK else 20_000
    with ProcessPoolExecutor(2, mp_context=ctx) as ex:
        ex.submit(trivial, 1).result()
        t = time.perf_counter()
        futs = [ex.submit(trivial, i) for i in range(n)]
        for f in futs:
            f.result()
        emit("w2_ppe_submit", n / (time.perf_counter() - t), "tasks/s")

    # W3: 64 CPU-bound tasks of ~10 ms on 2 workers vs serially here.
    iters = 20_000
    t = time.perf_counter()
    spin(iters)
    per = time.perf_counter() - t
    iters = max(1, int(iters * 0.010 / per))
    t = time.perf_counter()
    for _ in range(64):
        spin(iters)
    serial = time.perf_counter() - t
    with ProcessPoolExecutor(2, mp_context=ctx) as ex:
        ex.submit(trivial, 1).result()
        t = time.perf_counter()
        list(ex.map(spin, [iters] * 64))
        pooled = time.perf_counter() - t
    emit("w3_speedup_ppe", serial / pooled, "x")

    # W4: 16 MiB bytes echoed.
    data = bytes(range(256)) * (1 << 16)
    n = 3 if QUICK else 10
    with ProcessPoolExecutor(1, mp_context=ctx) as ex:
        ex.submit(echo, b"x").result()
        t = time.perf_counter()
        for _ in range(n):
            ex.submit(echo, data).result()
        emit("w4_echo_ppe", 2 * len(data) * n / (time.perf_counter() - t) / 1e9, "GB/s")

    # W5: pool of 2 built + first result (fork, then spawn).
    for method in ("fork", "spawn"):
        runs = []
        for _ in range(3 if method == "spawn" or QUICK else 7):
            t = time.perf_counter()
            ex = ProcessPoolExecutor(2, mp_context=mp.get_context(method))
            ex.submit(trivial, 1).result()
            runs.append(time.perf_counter() - t)
            ex.shutdown()
        runs.sort()
        emit(f"w5_startup_ppe_{method}", runs[len(runs) // 2] * 1e3, "ms")


if __name__ == "__main__":
    main()
