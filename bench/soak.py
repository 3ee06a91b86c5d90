"""A bounded soak of the whole API on loopback, as hostile-but-honest clients would load it.

    python -m bench.soak [--clients 64] [--seconds 120] [--quick]

``genloop serve`` (its defaults: ``--max-batch 16 --queue 32``, the default rate limit) serves
the quickstart's text model and a small digits diffusion model from ``bench/out/home``. 64
clients in this process, each looping over a mix: completions (plain and streamed), chats whose
bodies come up to the 1 MiB limit (hundreds of long messages: the case that once froze the
server), image generations, and ratings of generations it made. Every response is counted by
status; anything but 200/201/4xx/429/503, a dropped connection or a stream that ends in an error
is a failure. Meanwhile a separate process polls ``/health`` every 100 ms (its latency, p50/p99/max:
the event loop must never stall), and the server's resident memory is sampled every second (it
must be flat after the first minute: growth from 60 s to the end is reported).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from bench.common import ROOT, save, table
from bench.serving import BIN, Server, percentile, small_text_model, workspace_env

BODY_LIMIT = 1 << 20


def digits_model(home: Path, steps: int) -> str:
    from genloop.store import Store

    with Store() as store:
        found = [v for v in store.list_models() if v.name == "soak-digits"]
    if found:
        return max(found, key=lambda v: v.version).ref
    sets = ["--set", f"train.steps={steps}", "--set", "eval.num_samples=0", "--set", "name=soak-digits",
            "--set", "train.tensorboard=false"]
    subprocess.run([str(BIN / "genloop"), "train", "digits", *sets], env=workspace_env(home), check=True)
    return "soak-digits"


def create_keys(n: int) -> list[str]:
    """One key per client (each its own owner and rate-limit bucket), as a crowd of users."""
    from genloop.store import Store

    stamp = int(time.time())
    with Store() as store:
        return [store.create_key(f"soak-{stamp}-{i}")[1] for i in range(n)]


HEALTH_POLLER = """
import json, sys, time, httpx
url, seconds, out = sys.argv[1], float(sys.argv[2]), sys.argv[3]
lat, errors = [], []
end = time.monotonic() + seconds
with httpx.Client(base_url=url, timeout=30) as http:
    while time.monotonic() < end:
        t = time.perf_counter()
        try:
            if http.get("/health").status_code != 200:
                errors.append("status")
        except httpx.HTTPError as e:
            errors.append(type(e).__name__)
        lat.append(time.perf_counter() - t)
        time.sleep(0.1)
open(out, "w").write(json.dumps({"latencies": lat, "errors": errors}))
"""


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def big_chat(rng: random.Random) -> list[dict[str, str]]:
    """Up to just under the body limit: many long turns."""
    size = rng.choice([2_000, 50_000, 400_000, BODY_LIMIT - 40_000])
    turn = 4_000 if size > 10_000 else 500
    n = max(1, size // (turn + 40))
    return [{"role": "user" if i % 2 == 0 else "assistant", "content": "word " * (turn // 5)}
            for i in range(n)] + [{"role": "user", "content": "Say something."}]


async def soak(url: str, keys: list[str], text: str, image: str, clients: int, seconds: float,
               server_pid: int) -> dict[str, Any]:
    statuses: Counter[str] = Counter()
    failures: list[str] = []
    kinds: Counter[str] = Counter()
    memory: list[tuple[float, float]] = []
    t0 = time.monotonic()
    end = t0 + seconds
    # /health is polled from its own process, so its latency is the server's, not this busy loop's
    health_file = Path(f"/tmp/genloop-soak-health-{os.getpid()}.json")
    poller = subprocess.Popen([sys.executable, "-c", HEALTH_POLLER, url, str(seconds), str(health_file)])

    async def call(http: httpx.AsyncClient, kind: str, method: str, path: str, **kw: Any) -> Any:
        kinds[kind] += 1
        try:
            r = await http.request(method, path, **kw)
        except httpx.HTTPError as e:
            failures.append(f"{kind}: {type(e).__name__}")
            return None
        statuses[str(r.status_code)] += 1
        if r.status_code >= 500 and r.status_code != 503:
            failures.append(f"{kind}: {r.status_code} {r.text[:200]}")
        return r

    async def client(i: int) -> None:
        rng = random.Random(i)
        mine: list[str] = []
        headers = {"Authorization": f"Bearer {keys[i % len(keys)]}"}
        async with httpx.AsyncClient(base_url=url, headers=headers, timeout=120) as http:
            while time.monotonic() < end:
                pick = rng.random()
                if pick < 0.45:
                    body = {"model": text, "prompt": rng.choice(["The ", "def ", "A "]),
                            "max_tokens": 48, "seed": rng.randrange(1000), "n": rng.choice([1, 2])}
                    if rng.random() < 0.5:
                        kinds["completion-stream"] += 1
                        try:
                            async with http.stream("POST", "/v1/completions",
                                                   json={**body, "stream": True}) as r:
                                statuses[str(r.status_code)] += 1
                                async for line in r.aiter_lines():
                                    if line.startswith("data: ") and '"error"' in line:
                                        failures.append(f"stream error: {line[:200]}")
                        except httpx.HTTPError as e:
                            failures.append(f"completion-stream: {type(e).__name__}")
                        continue
                    r = await call(http, "completion", "POST", "/v1/completions", json=body)
                    if r is not None and r.status_code == 200:
                        mine += [c["generation_id"] for c in r.json()["choices"]]
                elif pick < 0.65:
                    await call(http, "chat", "POST", "/v1/chat/completions",
                               json={"model": text, "messages": big_chat(rng), "max_tokens": 24,
                                     "n": rng.choice([1, 4])})
                elif pick < 0.80:
                    r = await call(http, "image", "POST", "/v1/images/generations",
                                   json={"model": image, "n": 2, "steps": 8, "seed": rng.randrange(99),
                                         "response_format": "b64_json"})
                    if r is not None and r.status_code == 200:
                        mine += [d["generation_id"] for d in r.json()["data"]]
                elif mine:
                    await call(http, "feedback", "POST", f"/v1/generations/{rng.choice(mine)}/feedback",
                               json={"rating": rng.randint(1, 5)})
                else:
                    await call(http, "list", "GET", "/v1/generations", params={"limit": 5})
                await asyncio.sleep(0.05 if pick > 0.45 else 0)

    async def sample_memory() -> None:
        while time.monotonic() < end:
            memory.append((time.monotonic() - t0, rss_mb(server_pid)))
            await asyncio.sleep(1.0)

    await asyncio.gather(sample_memory(), *(client(i) for i in range(clients)))
    poller.wait(60)
    polled = json.loads(health_file.read_text())
    health_file.unlink()
    health = polled["latencies"]
    failures += [f"health: {e}" for e in polled["errors"]]
    at_60 = [m for t, m in memory if t >= min(60.0, seconds / 2)]
    return {
        "statuses": dict(sorted(statuses.items())), "requests": dict(kinds), "failures": failures[:50],
        "failure_count": len(failures),
        "health_p50_ms": 1000 * (percentile(health, 50) or 0),
        "health_p99_ms": 1000 * (percentile(health, 99) or 0),
        "health_max_ms": 1000 * max(health), "health_polls": len(health),
        "rss_mb_start": memory[0][1], "rss_mb_at_60s": at_60[0], "rss_mb_end": memory[-1][1],
        "rss_growth_after_60s": (memory[-1][1] - at_60[0]) / at_60[0],
        "memory": memory,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--seconds", type=float, default=120)
    ap.add_argument("--quick", action="store_true", help="16 clients for 20 s, results not saved")
    args = ap.parse_args()
    if args.quick:
        args.clients, args.seconds = 16, 20
    home = ROOT / "bench" / "out" / "home"
    os.environ["GENLOOP_HOME"] = str(home)
    text = small_text_model(home, None)["ref"]
    image = digits_model(home, steps=300)
    keys = create_keys(args.clients)
    server = Server(home, text, "soak")
    try:
        r = asyncio.run(soak(server.url, keys, text, image, args.clients, args.seconds,
                             server.process.pid))
    finally:
        server.stop()
    ok = r["failure_count"] == 0 and set(r["statuses"]) <= {"200", "201", "400", "404", "413", "429", "503"}
    lines = [
        "## Soak: the whole API under hostile-but-honest load",
        "",
        f"{args.clients} clients for {args.seconds:.0f} s on loopback against `genloop serve` (defaults: "
        f"`--max-batch 16 --queue 32`, 600 requests per key per minute) serving `{text}` and "
        f"`{image}`, each client with its own API key: completions (plain and streamed), chats of up "
        "to the 1 MiB body limit (hundreds of 4,000-character turns), image generations (n = 2, 8 "
        "DDIM steps) and ratings of the client's own generations. `/health` polled every 100 ms from "
        "a separate process; the server's RSS sampled every second. The clients and the server share "
        "the machine's two cores.",
        "",
        table(["requests", "statuses", "failures", "/health p50 / p99 / max (ms)",
               "RSS at start / 60 s / end (MB)", "growth after 60 s"],
              [[", ".join(f"{k} {v}" for k, v in r["requests"].items()),
                ", ".join(f"{k}: {v}" for k, v in r["statuses"].items()), r["failure_count"],
                f"{r['health_p50_ms']:.1f} / {r['health_p99_ms']:.1f} / {r['health_max_ms']:.1f}",
                f"{r['rss_mb_start']:.0f} / {r['rss_mb_at_60s']:.0f} / {r['rss_mb_end']:.0f}",
                f"{100 * r['rss_growth_after_60s']:+.1f}%"]]),
        "",
        f"**{'Only 200/201/4xx/429/503, no failure' if ok else 'FAILURES: ' + '; '.join(r['failures'][:5])}; "
        f"/health p99 {r['health_p99_ms']:.0f} ms (target ≤ 500 ms).**",
    ]
    print("\n".join(lines))
    if not args.quick:
        figures = {**r, "clients": args.clients, "seconds": args.seconds, "ok": ok}
        save("soak", figures, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
