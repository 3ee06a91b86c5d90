"""Serving under load: continuous batching through the HTTP API, and behaviour past capacity.

    python -m bench.serving [--quick] [--clients 1,4,8,16] [--seconds 15] [--rounds 2]
                            [--overload-s 120] [--decode process,thread]

0. The bare decoding loop: the model's slot decoder in this process, one sequence, no batcher,
   no HTTP, sampled as the clients are; one HTTP client's tokens/s is reported as a share of it
   (target ≥ 85%) for each ``genloop serve --decode`` mode (``process``: each text model decodes
   in its own process; ``thread``: in the server's), and 8 clients against 1 (target ≥ 4×).

The model is the quickstart's small text model (the built-in ``quickstart`` recipe: a char-level
GPT, 4 layers × 4 heads × 128 dims, context 128, on the Python docs), trained once into
``bench/out/home`` and reused. ``genloop serve`` runs it in its own process with its default
``--threads 1`` (one torch thread for the forward passes; the server's other threads and the
second core serve HTTP); the load generator is this process: asyncio + httpx streaming clients on
loopback, each sending ``POST /v1/completions`` (``stream``, ``max_tokens`` 128, temperature 0.8,
``include_usage``) back to back. Both share the machine's cores.

1. Throughput (``--rate-limit 0``, the default ``--max-batch 16 --queue 32``): for each number of
   concurrent clients, ``--seconds`` of load, the levels interleaved over ``--rounds`` rounds.
   Tokens/s counts the tokens of the streamed text chunks that arrive inside the measured window
   (a chunk's characters: one per token for this char-level model, checked against the usage
   each stream ends with; a chunk carries several tokens when the server's stream falls behind
   its decoding, so chunks are not tokens). Time to first token is from sending the request to
   its first text chunk; per-token latency is the gap between consecutive chunks of one stream.
2. Overload (``--max-batch 8 --queue 8 --rate-limit 600``, capacity 16 sequences): 4× capacity in
   clients that keep sending for ``--overload-s`` (a short pause after a refusal, Retry-After not
   honoured). Every response must be 200, 429 or 503; anything else, a dropped connection or a
   stream that ends in an error counts as a failure.

``--quick`` (about a minute after a short training run in ``bench/out/serving-quick``) tries the
whole thing without writing results.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.common import ROOT, save, table

BIN = Path(sys.executable).parent
PROMPTS = ["The ", "def ", "Return ", "A list ", "class ", "If the "]
MAX_TOKENS = 128
TEMPERATURE = 0.8
SERVER_THREADS = 1  # genloop serve's default --threads: one decodes, the other core serves HTTP


# --- the model and the server -------------------------------------------------------------------


def workspace_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("GENLOOP_DB_URL", "GENLOOP_CACHE")}
    env.update(GENLOOP_HOME=str(home), OMP_NUM_THREADS=str(SERVER_THREADS), PYTHONUNBUFFERED="1")
    return env


def small_text_model(home: Path, steps: int | None) -> dict[str, Any]:
    """The newest ``python-docs`` version trained for the recipe's steps (or ``steps``); trained
    now with ``genloop train quickstart`` when there is none."""
    from genloop.store import Store
    from genloop.training.recipe import load_recipe

    recipe = load_recipe("quickstart", [f"train.steps={steps}"] if steps else [])
    want = recipe.train.steps

    def find() -> Any:
        with Store() as store:
            versions = [v for v in store.list_models() if v.name == recipe.name
                        and (v.metrics or {}).get("train_steps") == want]
        return max(versions, key=lambda v: v.version) if versions else None

    version = find()
    if version is None:
        print(f"training the quickstart recipe ({want} steps) into {home} ...", flush=True)
        sets = [a for s in ["train.tensorboard=false", f"train.steps={want}"] for a in ("--set", s)]
        subprocess.run([str(BIN / "genloop"), "train", "quickstart", *sets], env=workspace_env(home),
                       check=True)
        version = find()
        assert version is not None, "training finished but registered no matching version"
    m = version.metrics or {}
    return {"ref": version.ref, "train_steps": want, "val_loss": m.get("val_loss"),
            "bits_per_char": m.get("bits_per_char"), "model": recipe.model.model_dump(mode="json")}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``genloop serve`` in its own process, with its model preloaded; stopped on exit."""

    def __init__(self, home: Path, ref: str, name: str, *flags: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = home.parent / f"serving-{name}.log"  # the last run's, beside the workspace
        self.process = subprocess.Popen(
            [str(BIN / "genloop"), "serve", "--port", str(self.port), "--log-level", "warning",
             "--preload", ref, "--threads", str(SERVER_THREADS), *flags],
            env=workspace_env(home), stdout=self.log.open("w"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"genloop serve exited: {self.log.read_text()[-2000:]}")
            try:
                health = httpx.get(f"{self.url}/health", timeout=1)
                # ready: and every preloaded model's decoding process has loaded it
                if health.status_code == 200 and all(d["ready"] for d in
                                                     health.json().get("decoding", [])):
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError("genloop serve did not answer /health within 120 s")

    def cpu_s(self) -> float:
        """User + system CPU seconds of the server process and its decoding processes so far."""
        pids = [self.process.pid]
        for task in Path(f"/proc/{self.process.pid}/task").iterdir():
            pids += [int(p) for p in (task / "children").read_text().split()]
        total = 0
        for pid in pids:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except FileNotFoundError:
                continue
            total += int(fields[11]) + int(fields[12])
        return total / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def metric(url: str, key: str, name: str) -> dict[str, float]:
    """Samples of one metric family from /metrics: {'name{labels}': value}."""
    text = httpx.get(f"{url}/metrics", headers={"Authorization": f"Bearer {key}"}, timeout=10).text
    out = {}
    for line in text.splitlines():
        if line.startswith(name):
            sample, value = line.rsplit(" ", 1)
            out[sample] = float(value)
    return out


# --- one streaming request ----------------------------------------------------------------------


@dataclass
class Stream:
    status: int | str  # HTTP status, or the name of the exception that ended the request
    sent: float
    chunks: list[float] = field(default_factory=list)  # arrival time of each text chunk
    chunk_tokens: list[int] = field(default_factory=list)  # its tokens (characters: char-level)
    usage_tokens: int | None = None
    done: bool = False  # ended with [DONE]
    error: str | None = None  # an error event in the stream

    @property
    def ttft(self) -> float | None:
        return self.chunks[0] - self.sent if self.chunks else None


async def stream_once(http: httpx.AsyncClient, model: str, seed: int) -> Stream:
    body = {"model": model, "prompt": PROMPTS[seed % len(PROMPTS)], "max_tokens": MAX_TOKENS,
            "temperature": TEMPERATURE, "seed": seed, "stream": True,
            "stream_options": {"include_usage": True}}
    s = Stream(status=0, sent=time.perf_counter())
    try:
        async with http.stream("POST", "/v1/completions", json=body) as r:
            s.status = r.status_code
            if r.status_code != 200:
                await r.aread()
                return s
            async for line in r.aiter_lines():
                if not line.startswith("data: "):
                    continue
                now, data = time.perf_counter(), line[6:]
                if data == "[DONE]":
                    s.done = True
                    break
                event = json.loads(data)
                if "error" in event:
                    s.error = event["error"].get("message", "error")
                    break
                if event.get("usage") is not None:
                    s.usage_tokens = event["usage"]["completion_tokens"]
                for choice in event.get("choices", []):
                    if choice.get("text"):
                        s.chunks.append(now)
                        s.chunk_tokens.append(len(choice["text"]))
    except httpx.HTTPError as e:  # before the response's headers: in place of a status
        if s.status == 0:
            s.status = type(e).__name__
        else:
            s.error = type(e).__name__
    return s


def percentile(values: list[float], q: float) -> float | None:
    """The q-th percentile (nearest rank); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


def ms(v: float | None) -> float | None:
    return None if v is None else v * 1e3


# --- 1. throughput ------------------------------------------------------------------------------


async def load_level(url: str, key: str, model: str, clients: int, seconds: float,
                     seed0: int, pause_after_refusal_s: float = 0.0
                     ) -> tuple[list[Stream], float, float]:
    """``clients`` streaming clients back to back for ``seconds`` (one pausing
    ``pause_after_refusal_s`` after a refusal); requests in flight at the end finish (their chunks
    after the window are not counted). Returns the streams and the window."""
    limits = httpx.Limits(max_connections=clients + 4, max_keepalive_connections=clients + 4)
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {key}"},
                                 timeout=120, limits=limits) as http:
        start = time.perf_counter()
        end = start + seconds
        streams: list[Stream] = []

        async def client(i: int) -> None:
            n = 0
            while time.perf_counter() < end:
                s = await stream_once(http, model, seed0 + i * 100_000 + n)
                streams.append(s)
                n += 1
                if s.status != 200 and pause_after_refusal_s:
                    await asyncio.sleep(pause_after_refusal_s)

        await asyncio.gather(*(client(i) for i in range(clients)))
    return streams, start, end


def summarize_level(streams: list[Stream], start: float, end: float) -> dict[str, Any]:
    in_window = sum(n for s in streams for t, n in zip(s.chunks, s.chunk_tokens, strict=True)
                    if start <= t <= end)
    gaps = [b - a for s in streams for a, b in zip(s.chunks, s.chunks[1:], strict=False)
            if start <= b <= end]
    ttfts = [s.ttft for s in streams if s.ttft is not None and s.sent <= end]
    ok = [s for s in streams if s.status == 200 and s.done and s.error is None]
    mismatched = sum(1 for s in ok if s.usage_tokens != sum(s.chunk_tokens))
    return {"tokens": in_window, "window_s": end - start,
            "tokens_per_s": in_window / (end - start), "chunks": sum(len(s.chunks) for s in streams),
            "requests": len(streams), "completed": len(ok),
            "failed": len(streams) - len(ok), "chunk_usage_mismatches": mismatched,
            "ttft_p50_ms": ms(percentile(ttfts, 50)), "ttft_p99_ms": ms(percentile(ttfts, 99)),
            "token_p50_ms": ms(percentile(gaps, 50)), "token_p99_ms": ms(percentile(gaps, 99)),
            "_ttfts": ttfts, "_gaps": gaps}


def throughput(home: Path, model: str, key: str, levels: list[int], seconds: float,
               rounds: int, decode: str = "process") -> dict[str, Any]:
    server = Server(home, model, f"throughput-{decode}", "--rate-limit", "0", "--decode", decode)
    try:
        asyncio.run(load_level(server.url, key, model, 2, 3, seed0=9_000_000))  # warm up
        runs: dict[int, list[dict[str, Any]]] = {c: [] for c in levels}
        for r in range(rounds):
            for c in levels:
                batch0 = metric(server.url, key, "genloop_batch_size_")
                cpu0, client0, load0 = server.cpu_s(), time.process_time(), os.getloadavg()[0]
                streams, start, end = asyncio.run(load_level(server.url, key, model, c, seconds,
                                                             seed0=r * 10_000_000))
                batch1 = metric(server.url, key, "genloop_batch_size_")
                row = summarize_level(streams, start, end)
                steps = batch1["genloop_batch_size_count"] - batch0["genloop_batch_size_count"]
                seqs = batch1["genloop_batch_size_sum"] - batch0["genloop_batch_size_sum"]
                elapsed = time.perf_counter() - start
                row.update(round=r, mean_batch=seqs / steps if steps else None,
                           server_cpu_s=server.cpu_s() - cpu0, client_cpu_s=time.process_time() - client0,
                           elapsed_s=elapsed, loadavg_1m=load0)
                runs[c].append(row)
                print(f"{decode} round {r} clients {c:>2}: {row['tokens_per_s']:7.1f} tokens/s "
                      f"({row['chunks']} chunks), TTFT p50 "
                      f"{row['ttft_p50_ms']:.0f} ms, token p50 {row['token_p50_ms']:.1f} ms, "
                      f"batch {row['mean_batch'] or 0:.1f}, server CPU {row['server_cpu_s'] / elapsed:.2f} "
                      f"cores, client CPU {row['client_cpu_s'] / elapsed:.2f} cores", flush=True)
    finally:
        server.stop()
    result = {}
    for c, rows in runs.items():
        tokens = sum(r["tokens"] for r in rows)
        window = sum(r["window_s"] for r in rows)
        ttfts = [t for r in rows for t in r.pop("_ttfts")]
        gaps = [g for r in rows for g in r.pop("_gaps")]
        elapsed = sum(r["elapsed_s"] for r in rows)
        result[str(c)] = {
            "clients": c, "tokens_per_s": tokens / window, "tokens": tokens, "window_s": window,
            "requests": sum(r["requests"] for r in rows), "completed": sum(r["completed"] for r in rows),
            "failed": sum(r["failed"] for r in rows),
            "chunk_usage_mismatches": sum(r["chunk_usage_mismatches"] for r in rows),
            "ttft_p50_ms": ms(percentile(ttfts, 50)), "ttft_p99_ms": ms(percentile(ttfts, 99)),
            "token_p50_ms": ms(percentile(gaps, 50)), "token_p99_ms": ms(percentile(gaps, 99)),
            "mean_batch": (sum((r["mean_batch"] or 0) * r["tokens"] for r in rows) / tokens
                           if tokens else None),
            "server_cores": sum(r["server_cpu_s"] for r in rows) / elapsed,
            "client_cores": sum(r["client_cpu_s"] for r in rows) / elapsed,
            "rounds": rows,
        }
    return result


def batcher_baseline(ref: str, levels: list[int], seconds: float) -> dict[str, Any]:
    """The same load on the model's batcher in this process, without HTTP: what the face costs.

    ``c`` threads each submit one request at a time, back to back, and wait for it; text pieces
    are counted as they are emitted, inside the same kind of window as the HTTP levels.
    """
    import threading

    import torch

    from genloop.generation.batching import Batcher, Failed, Finished, Piece
    from genloop.generation.service import load
    from genloop.generation.text import TextRequest
    from genloop.store import Store

    torch.set_num_threads(SERVER_THREADS)
    with Store() as store:
        model = load(ref, store, 1)
    assert model.tokenizer is not None
    batcher = Batcher(model.family, model.network, model.tokenizer, max_batch=16, max_queue=32,
                      idle_exit_s=0.5)

    def run(clients: int, window: float, seed0: int) -> tuple[list[float], float, float]:
        stamps: list[tuple[float, int]] = []  # (when, tokens: characters, as over HTTP)
        start = time.perf_counter()
        end = start + window

        def client(i: int) -> None:
            n = 0
            while time.perf_counter() < end:
                finished = threading.Event()

                def on_event(event: Any, finished: threading.Event = finished) -> None:
                    if isinstance(event, Piece) and event.text:
                        stamps.append((time.perf_counter(), len(event.text)))
                    elif isinstance(event, Finished | Failed):
                        finished.set()

                batcher.submit(TextRequest(prompt=PROMPTS[n % len(PROMPTS)], max_new_tokens=MAX_TOKENS,
                                           temperature=TEMPERATURE, seed=seed0 + i * 100_000 + n),
                               on_event)
                finished.wait(120)
                n += 1

        threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return stamps, start, end

    run(2, 2.0, 9_000_000)  # warm up
    out = {}
    for c in levels:
        stamps, start, end = run(c, seconds, 0)
        tokens = sum(n for t, n in stamps if start <= t <= end)
        out[str(c)] = {"clients": c, "tokens_per_s": tokens / (end - start), "tokens": tokens}
        print(f"in-process batcher, {c:>2} clients: {tokens / (end - start):7.1f} tokens/s", flush=True)
    while any(t.name == "genloop-batcher" for t in threading.enumerate()):  # idle exit: 0.5 s
        time.sleep(0.1)
    return out


def bare_decoding(ref: str, seconds: float) -> dict[str, Any]:
    """The model's bare decoding loop in this process: one sequence through the family's slot
    decoder, no batcher, no HTTP, sampled as the clients ask (temperature, ``MAX_TOKENS`` per
    request, the same prompts, a generator per request), back to back for ``seconds``."""
    import torch

    from genloop.generation.service import TextModel, load
    from genloop.generation.text import encode_prompt
    from genloop.models.sampling import next_token_probs
    from genloop.store import Store

    torch.set_num_threads(SERVER_THREADS)
    with Store() as store:
        model = load(ref, store, 1)
    assert isinstance(model, TextModel) and model.family.slot_decoder is not None
    block = getattr(model.network.config, "block_size", None)

    def run(window: float) -> tuple[int, float]:
        decoder = model.family.slot_decoder(model.network, 1)  # type: ignore[misc]
        tokens, n, start = 0, 0, time.perf_counter()
        with torch.inference_mode():
            while time.perf_counter() - start < window:
                generator = torch.Generator().manual_seed(n)
                ids = encode_prompt(model.tokenizer, PROMPTS[n % len(PROMPTS)], block)
                logits = decoder.prefill(0, torch.tensor(ids, dtype=torch.long))[None]
                for _ in range(MAX_TOKENS):
                    probs = next_token_probs(logits, temperature=TEMPERATURE)
                    token = torch.multinomial(probs, 1, generator=generator)[:, 0]
                    tokens += 1
                    logits = decoder.step([0], token)
                decoder.free(0)
                n += 1
        return tokens, time.perf_counter() - start

    run(1.0)  # warm up
    tokens, elapsed = run(seconds)
    print(f"bare decoding loop, 1 sequence: {tokens / elapsed:7.1f} tokens/s", flush=True)
    return {"tokens_per_s": tokens / elapsed, "tokens": tokens, "seconds": elapsed}


# --- 2. overload --------------------------------------------------------------------------------


def overload(home: Path, model: str, key: str, seconds: float, max_batch: int, queue: int,
             rate_limit: int, factor: int, pause_s: float, decode: str = "process") -> dict[str, Any]:
    capacity = max_batch + queue
    clients = factor * capacity
    server = Server(home, model, "overload", "--max-batch", str(max_batch), "--queue", str(queue),
                    "--rate-limit", str(rate_limit), "--decode", decode)
    try:
        print(f"overload: {clients} clients for {seconds:.0f} s (capacity {capacity})", flush=True)
        load0 = os.getloadavg()[0]
        streams, start, _ = asyncio.run(load_level(server.url, key, model, clients, seconds,
                                                   50_000_000, pause_after_refusal_s=pause_s))
        elapsed = time.perf_counter() - start  # the window and the tail of requests in flight
        server_view = metric(server.url, key, "genloop_http_requests_total")
        healthy = httpx.get(f"{server.url}/health", timeout=10).status_code == 200
        after = asyncio.run(load_level(server.url, key, model, 1, 0.1, seed0=1))[0]
        server_alive = server.process.poll() is None
    finally:
        server.stop()
    statuses = Counter(str(s.status) for s in streams)
    ok = [s for s in streams if s.status == 200]
    # any other HTTP status is a failure; so is a request cut off before (dropped) or during
    # (broken) its response
    unexpected = {k: v for k, v in statuses.items() if k.isdigit() and k not in ("200", "429", "503")}
    dropped = {k: v for k, v in statuses.items() if not k.isdigit()}
    broken = Counter(s.error or "no [DONE]" for s in ok if not s.done or s.error is not None)
    ttfts = [s.ttft for s in ok if s.ttft is not None]
    tokens = sum(s.usage_tokens or sum(s.chunk_tokens) for s in ok if s.done)
    server_statuses: Counter = Counter()
    for sample, value in server_view.items():
        if 'route="/v1/completions"' in sample:
            status = sample.split('status="', 1)[1].split('"', 1)[0]
            server_statuses[status] += int(value)
    return {
        "clients": clients, "capacity": capacity, "max_batch": max_batch, "queue": queue,
        "rate_limit_per_min": rate_limit, "seconds": elapsed, "pause_after_refusal_s": pause_s,
        "statuses": dict(statuses), "server_statuses": dict(server_statuses),
        "unexpected_statuses": unexpected, "dropped": dropped, "broken_streams": dict(broken),
        "failure_count": sum(unexpected.values()) + sum(dropped.values()) + sum(broken.values()),
        "accepted_tokens_per_s": tokens / elapsed,
        "ttft_p50_ms": ms(percentile(ttfts, 50)), "ttft_p99_ms": ms(percentile(ttfts, 99)),
        "requests_per_s": len(streams) / elapsed,
        "healthy_after": healthy and server_alive and all(s.status == 200 and s.done for s in after),
        "loadavg_1m": load0,
    }


# --- report -------------------------------------------------------------------------------------


def targets(by_mode: dict[str, dict[str, Any]], bare: dict[str, Any]) -> list[list[Any]]:
    """Per decode mode: 1 client's tokens/s as a share of the bare loop's, 8 clients' over 1."""
    rows = []
    for mode, levels in by_mode.items():
        one = levels.get("1", {}).get("tokens_per_s")
        eight = levels.get("8", {}).get("tokens_per_s")
        share = one / bare["tokens_per_s"] if one else None
        speedup = eight / one if one and eight else None
        rows.append([f"`--decode {mode}`", one, bare["tokens_per_s"],
                     "—" if share is None else f"{share:.0%} ({'met' if share >= 0.85 else 'missed'})",
                     eight, "—" if speedup is None else
                     f"{speedup:.2f}× ({'met' if speedup >= 4 else 'missed'})"])
    return rows


def report(model: dict[str, Any], by_mode: dict[str, dict[str, Any]], inproc: dict[str, Any],
           bare: dict[str, Any], over: dict[str, Any], seconds: float, rounds: int) -> str:
    mode = next(iter(by_mode))
    levels = by_mode[mode]
    one = levels.get("1", {}).get("tokens_per_s")
    eight = levels.get("8", {}).get("tokens_per_s")
    speedup = eight / one if one and eight else None
    base = inproc.get("1", {}).get("tokens_per_s")
    rows = [[c["clients"], c["tokens_per_s"],
             f"{c['tokens_per_s'] / one:.2f}×" if one else "—",
             (f"{inproc[k]['tokens_per_s']:,.0f} ({inproc[k]['tokens_per_s'] / base:.2f}×)"
              if k in inproc and base else "—"),
             c["mean_batch"], c["ttft_p50_ms"],
             c["ttft_p99_ms"], c["token_p50_ms"], c["token_p99_ms"], c["completed"], c["failed"],
             f"{c['server_cores']:.2f} / {c['client_cores']:.2f}"] for k, c in levels.items()]
    statuses = ", ".join(f"{k}: {v:,}" for k, v in sorted(over["statuses"].items()) if k.isdigit())
    server = ", ".join(f"{k}: {v:,}" for k, v in sorted(over["server_statuses"].items()))
    unexpected = sum(over["unexpected_statuses"].values())
    dropped, broken = sum(over["dropped"].values()), sum(over["broken_streams"].values())
    loads = [r["loadavg_1m"] for c in levels.values() for r in c["rounds"]]
    verdict = "met" if speedup is not None and speedup >= 4 else "missed"
    others = [f"`--decode {m}`: " + ", ".join(f"{c} clients {v['tokens_per_s']:,.0f}"
                                               for c, v in lv.items())
              for m, lv in by_mode.items() if m != mode]
    return "\n".join([
        "## Serving: continuous batching over HTTP",
        "",
        f"Model `{model['ref']}`: the quickstart recipe (char-level GPT, {model['model']['preset']} "
        f"preset, context {model['model']['config'].get('block_size')}, {model['train_steps']} steps, "
        f"validation loss {model['val_loss']:.3f}), served by `genloop serve` in its own process "
        f"with `--threads {SERVER_THREADS}` (its default). Load: asyncio + httpx clients in the benchmark's "
        f"process on the same two cores, each streaming `POST /v1/completions` back to back "
        f"(`max_tokens` {MAX_TOKENS}, temperature {TEMPERATURE}, prompts of 4–7 characters, so a "
        "stream that runs to its length crosses the 128-token context once and its slot refills "
        "half a context). The server, the clients and the in-process baseline share the two "
        f"cores (1-minute load average {min(loads):.1f}–{max(loads):.1f} before each level, this "
        "benchmark's own processes included).",
        "",
        "**Against the bare decoding loop** (the model's slot decoder in this process, one "
        "sequence, no batcher, no HTTP, sampled as the clients are; "
        f"{bare['seconds']:.0f} s in the same run) for each place decoding runs "
        "(`genloop serve --decode`; the modes one after the other, each with the levels below):",
        "",
        table(["server", "1 HTTP client (tokens/s)", "bare loop (tokens/s)",
               "1 client / bare (target ≥ 85%)", "8 clients (tokens/s)",
               "8 / 1 (target ≥ 4×)"], targets(by_mode, bare)),
        "",
        f"**Throughput** with `--decode {mode}` (`--rate-limit 0`, `--max-batch 16 --queue 32`): "
        f"{rounds} interleaved "
        f"round{'s' if rounds > 1 else ''} of {seconds:g} s per level. Tokens/s counts the "
        "tokens of the streamed text chunks that arrived inside the window (characters: one per "
        "token for this char-level model, checked against each stream's usage; a chunk holds "
        "several when the stream falls behind the decoding); TTFT is "
        "from sending to the first text chunk; per-token latency is the gap between chunks of one "
        "stream. Mean batch is the server's sequences per decoding step (its `/metrics`). The "
        "baseline column is the same load on the model's batcher inside one process, without "
        f"HTTP ({SERVER_THREADS} thread{'s' if SERVER_THREADS > 1 else ''}, one window of "
        f"{seconds:g} s per level, same run).",
        "",
        table(["clients", "tokens/s", "vs 1 client", "baseline: batcher, no HTTP", "mean batch",
               "TTFT p50 (ms)", "TTFT p99 (ms)",
               "per-token p50 (ms)", "per-token p99 (ms)", "requests done", "failed",
               "CPU cores server / client"], rows),
        "",
        (f"**8 concurrent clients get {speedup:.2f}× the tokens/s of one client (target ≥ 4×): "
         f"{verdict}.**" if speedup is not None else ""),
        *(["", "Other modes, same levels and rounds: " + "; ".join(others) + " tokens/s."]
          if others else []),
        "",
        f"**Overload** (`--decode {mode} --max-batch {over['max_batch']} --queue {over['queue']} "
        "--rate-limit "
        f"{over['rate_limit_per_min']}`, capacity {over['capacity']} sequences): {over['clients']} "
        f"streaming clients (4× capacity, one key) for {over['seconds']:.0f} s, each sending again "
        f"after {over['pause_after_refusal_s']:g} s when refused (ignoring Retry-After).",
        "",
        table(["responses by status (client)", "(server's count)", "other status", "dropped connections",
               "broken streams", "requests/s", "accepted tokens/s", "TTFT p50 (ms)", "TTFT p99 (ms)",
               "healthy after"],
              [[statuses, server, unexpected,
                f"{dropped} ({', '.join(over['dropped'])})" if dropped else 0,
                f"{broken} ({', '.join(over['broken_streams'])})" if broken else 0, over["requests_per_s"],
                over["accepted_tokens_per_s"], over["ttft_p50_ms"], over["ttft_p99_ms"],
                "yes" if over["healthy_after"] else "**no**"]]),
        "",
        ("**Past capacity every HTTP answer was 200, 429 or 503**" if unexpected == 0 else
         f"**{unexpected} answers past capacity were neither 200, 429 nor 503: "
         f"{over['unexpected_statuses']}**")
        + (f"; {dropped + broken} requests were cut off without an answer" if dropped + broken
           else ", and no request was cut off.")
        + ((" (the server's own count equals the answered requests: it never read them)."
            if sum(over["server_statuses"].values()) == sum(v for k, v in over["statuses"].items()
                                                            if k.isdigit()) else ".")
           if dropped + broken else ""),
    ])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="short levels, 20 s overload, no results")
    ap.add_argument("--clients", default="1,4,8,16", help="concurrency levels")
    ap.add_argument("--seconds", type=float, default=15.0, help="of load per level and round")
    ap.add_argument("--rounds", type=int, default=2, help="interleaved rounds over the levels")
    ap.add_argument("--overload-s", type=float, default=120.0)
    ap.add_argument("--pause", type=float, default=0.1, help="a client's pause after a refusal (s)")
    ap.add_argument("--train-steps", type=int, default=None, help="default: the recipe's")
    ap.add_argument("--decode", default="process,thread", help=(
        "genloop serve --decode modes to measure, the first also under overload"))
    args = ap.parse_args()
    if args.quick:
        args.seconds, args.rounds, args.overload_s = 4.0, 1, 20.0
        args.train_steps = args.train_steps or 100
    home = ROOT / "bench" / "out" / ("serving-quick" if args.quick else "home")
    os.environ["GENLOOP_HOME"] = str(home)
    os.environ.pop("GENLOOP_DB_URL", None)
    from genloop.store import Store

    model = small_text_model(home, args.train_steps)
    with Store() as store:
        record, key = store.create_key(f"bench-serving-{int(time.time())}")
    try:
        modes = args.decode.split(",")
        by_mode = {mode: throughput(home, model["ref"], key,
                                    [int(c) for c in args.clients.split(",")], args.seconds,
                                    args.rounds, mode) for mode in modes}
        bare = bare_decoding(model["ref"], args.seconds * 2)
        inproc = batcher_baseline(model["ref"], [int(c) for c in args.clients.split(",")],
                                  args.seconds)
        over = overload(home, model["ref"], key, args.overload_s, max_batch=8, queue=8,
                        rate_limit=600, factor=4, pause_s=args.pause, decode=modes[0])
    finally:
        with Store() as store:
            store.revoke_key(record.id)
    levels = by_mode[modes[0]]
    one, eight = levels.get("1"), levels.get("8")
    figures = {"model": model, "server_threads": SERVER_THREADS, "max_tokens": MAX_TOKENS,
               "temperature": TEMPERATURE, "seconds_per_level": args.seconds, "rounds": args.rounds,
               "decode": modes[0], "levels": levels, "levels_by_decode": by_mode,
               "bare_decoding": bare,
               "share_of_bare_1": one["tokens_per_s"] / bare["tokens_per_s"] if one else None,
               "batcher_baseline": inproc, "overload": over,
               "speedup_8": eight["tokens_per_s"] / one["tokens_per_s"] if one and eight else None,
               "overload_unexpected_statuses": sum(over["unexpected_statuses"].values()),
               "overload_failures": over["failure_count"]}
    md = report(model, by_mode, inproc, bare, over, args.seconds, args.rounds)
    if args.quick:
        print(json.dumps({k: v for k, v in figures.items() if k not in ("levels", "levels_by_decode")},
                         indent=2, default=str))
    else:
        save("serving", figures, md)
    print(md)


if __name__ == "__main__":
    main()
