"""Python's multiprocessing doing the work of benches/channels.rs, for the ratios.

Run by `cargo bench --bench channels` when python3 is found; can also be run alone:
    python3 benches/python/channels.py [items] [round_trips]
Prints one JSON object per line: {"name": ..., "value": ..., "unit": ...}.
Same work as the Rust side: 64-byte items from a child process to the parent, and
64-byte round trips parent -> child -> parent, through Queue and through Pipe.
"""
import json
import multiprocessing as mp
import sys
import time

ITEM = bytes(range(64))


def queue_producer(q, n):
    for _ in range(n):
        q.put(ITEM)


def queue_echo(inq, outq, n):
    for _ in range(n):
        outq.put(inq.get())


def pipe_producer(conn, n):
    for _ in range(n):
        conn.send(ITEM)
    conn.close()


def pipe_echo(conn, n):
    for _ in range(n):
        conn.send(conn.recv())


def report(name, value, unit):
    print(json.dumps({"name": name, "value": value, "unit": unit}), flush=True)


def main():
    items = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
    trips = int(sys.argv[2]) if len(sys.argv) > 2 else 5_000

    q = mp.Queue()
    p = mp.Process(target=queue_producer, args=(q, items))
    t0 = time.perf_counter()
    p.start()
    for _ in range(items):
        q.get()
    dt = time.perf_counter() - t0
    p.join()
    report("queue_throughput", items / dt, "items/s")

    a, b = mp.Queue(), mp.Queue()
    p = mp.Process(target=queue_echo, args=(a, b, trips))
    p.start()
    a.put(ITEM)
    b.get()  # warm-up: the child is running
    t0 = time.perf_counter()
    for _ in range(trips - 1):
        a.put(ITEM)
        b.get()
    dt = time.perf_counter() - t0
    p.join()
    report("queue_round_trip", dt / (trips - 1) * 1e6, "us")

    r, w = mp.Pipe(duplex=False)
    p = mp.Process(target=pipe_producer, args=(w, items))
    t0 = time.perf_counter()
    p.start()
    w.close()
    for _ in range(items):
        r.recv()
    dt = time.perf_counter() - t0
    p.join()
    report("pipe_throughput", items / dt, "items/s")

    x, y = mp.Pipe()
    p = mp.Process(target=pipe_echo, args=(y, trips))
    p.start()
    x.send(ITEM)
    x.recv()
    t0 = time.perf_counter()
    for _ in range(trips - 1):
        x.send(ITEM)
        x.recv()
    dt = time.perf_counter() - t0
    p.join()
    report("pipe_round_trip", dt / (trips - 1) * 1e6, "us")


if __name__ == "__main__":
    main()
