#!/usr/bin/env python3
"""serve_bench.py - load benchmark for `gkrun serve` (standard library only).

For each client count N, N threads each send streaming /v1/completions
requests back to back (a fixed prompt, greedy, max_tokens tokens with
ignore_eos) until each has sent --requests of them or --seconds have passed
(a 429, queue full, is retried after 50 ms and counted); then prints aggregate
output tokens/s, time to first token and time per output token (median and
p99 over requests). Loopback only: the URL must name 127.0.0.1, ::1 or
localhost.

  tools/serve_bench.py --url http://127.0.0.1:8080 --clients 1,4,16,64 \
      --max-tokens 64 --requests 4 [--prompt TEXT] [--seconds 120] [--json]
"""
import argparse, http.client, json, statistics, sys, threading, time, urllib.parse


def pct(v, q):
    if not v:
        return float("nan")
    v = sorted(v)
    return v[min(len(v) - 1, int(round(q * (len(v) - 1))))]


def one_request(host, port, body, timeout):
    """POST a streaming completion; returns (t_first, t_last, tokens, t0) or raises."""
    c = http.client.HTTPConnection(host, port, timeout=timeout)
    t0 = time.perf_counter()
    c.request("POST", "/v1/completions", body=body, headers={"Content-Type": "application/json"})
    r = c.getresponse()
    if r.status == 429:  # the queue is full: the caller tries again
        r.read()
        c.close()
        return None
    if r.status != 200:
        raise RuntimeError("HTTP %d: %s" % (r.status, r.read()[:200]))
    first = last = None
    n = 0
    buf = b""
    while True:
        chunk = r.read1(65536) if hasattr(r, "read1") else r.read(1)
        if not chunk:
            break
        buf += chunk
        while b"\n\n" in buf:
            ev, buf = buf.split(b"\n\n", 1)
            for line in ev.split(b"\n"):
                if not line.startswith(b"data: "):
                    continue
                data = line[6:]
                if data == b"[DONE]":
                    c.close()
                    return first, last, n, t0
                j = json.loads(data)
                ch = j.get("choices") or []
                if ch and ch[0].get("text") is not None and (ch[0].get("text") or ch[0].get("finish_reason") is None):
                    now = time.perf_counter()
                    if first is None:
                        first = now
                    last = now
                    n += 1
    c.close()
    return first, last, n, t0


def run(host, port, clients, args):
    body = json.dumps({"model": "gk", "prompt": args.prompt, "max_tokens": args.max_tokens, "temperature": 0, "ignore_eos": True,
                       "stream": True}).encode()
    results, errors, retried = [], [], [0]
    lock = threading.Lock()
    deadline = time.perf_counter() + args.seconds

    def worker():
        for _ in range(args.requests):
            if time.perf_counter() > deadline:
                return
            try:
                r = one_request(host, port, body, args.timeout)
                while r is None and time.perf_counter() < deadline:
                    with lock:
                        retried[0] += 1
                    time.sleep(0.05)
                    r = one_request(host, port, body, args.timeout)
                if r is None:
                    return
                with lock:
                    results.append(r)
            except Exception as e:  # noqa: BLE001 - reported, not hidden
                with lock:
                    errors.append(str(e))
                return

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    toks = sum(r[2] for r in results)
    ttft = [r[0] - r[3] for r in results if r[0] is not None]
    tpot = [(r[1] - r[0]) / (r[2] - 1) for r in results if r[0] is not None and r[2] > 1]
    return {"clients": clients, "requests": len(results), "errors": len(errors), "retried_429": retried[0], "first_error": errors[0] if errors else None,
            "output_tokens": toks, "wall_s": wall, "tokens_per_s": toks / wall if wall > 0 else 0,
            "ttft_median_s": statistics.median(ttft) if ttft else float("nan"), "ttft_p99_s": pct(ttft, 0.99),
            "tpot_median_s": statistics.median(tpot) if tpot else float("nan"), "tpot_p99_s": pct(tpot, 0.99)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", default="http://127.0.0.1:8080")
    ap.add_argument("--clients", default="1,4,16,64")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--requests", type=int, default=4, help="per client, at most")
    ap.add_argument("--seconds", type=float, default=120.0, help="no new request after this")
    ap.add_argument("--timeout", type=float, default=300.0)
    ap.add_argument("--prompt", default="In the beginning God created the heaven and the earth.")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    u = urllib.parse.urlparse(args.url)
    if u.hostname not in ("127.0.0.1", "::1", "localhost"):
        sys.exit("serve_bench: loopback only (got %s)" % u.hostname)
    try:
        counts = [int(x) for x in args.clients.split(",")]
    except ValueError:
        sys.exit("serve_bench: --clients wants N1,N2,... (got %s)" % args.clients)
    if any(n < 1 or n > 1024 for n in counts) or args.max_tokens < 1 or args.requests < 1:
        sys.exit("serve_bench: clients 1..1024, --max-tokens and --requests >= 1")
    rows = [run(u.hostname, u.port or 80, n, args) for n in counts]
    if args.json:
        print(json.dumps(rows))
        return
    base = rows[0]["tokens_per_s"] if rows and rows[0]["clients"] == 1 else None
    print("clients  requests  errors  output tok/s  vs 1  TTFT med/p99 (ms)   TPOT med/p99 (ms)")
    for r in rows:
        rel = "%5.1fx" % (r["tokens_per_s"] / base) if base else "   - "
        print("%7d  %8d  %6d  %12.1f  %s  %8.1f / %-8.1f  %7.2f / %-7.2f" % (
            r["clients"], r["requests"], r["errors"], r["tokens_per_s"], rel, r["ttft_median_s"] * 1e3,
            r["ttft_p99_s"] * 1e3, r["tpot_median_s"] * 1e3, r["tpot_p99_s"] * 1e3))
        if r["first_error"]:
            print("         first error: %s" % r["first_error"])
    if any(r["errors"] for r in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
