"""``genloop serve``: the OpenAI-compatible HTTP API and the studio. Every limit is a field of
``ServeConfig``, whose defaults the flags show."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Annotated

import typer

from genloop.cli.console import command_app, err, faced, out
from genloop.cli.options import option
from genloop.serving.settings import ServeConfig

app = command_app()


@app.command(epilog="Examples:\n\n"
             "    genloop keys create laptop      # prints a key once\n\n"
             "    genloop serve                   # http://127.0.0.1:8000 (studio at /)\n\n"
             "    genloop serve --port 9000 --max-batch 32 --rate-limit 120\n\n"
             "    genloop serve --no-auth         # loopback only, for local development\n\n"
             "    genloop serve --threads 2 --image-batch 16   # an image server: batches use both cores\n\n"
             "Then: OpenAI(base_url='http://127.0.0.1:8000/v1', api_key=KEY)")
@faced
def serve(
    host: str = option(ServeConfig, "host", help="address to bind (127.0.0.1: this machine only)"),
    port: int = option(ServeConfig, "port", help="port"),
    auth: bool = option(ServeConfig, "auth", help="require an API key (off: loopback addresses only)"),
    max_batch: int = option(ServeConfig, "max_batch"),
    max_queue: int = option(ServeConfig, "max_queue"),
    rate_limit: int = option(ServeConfig, "rate_limit", help="requests per key per minute (0: no limit)"),
    max_tokens: int = option(ServeConfig, "max_tokens", help="largest max_tokens a request may ask"),
    max_chat_chars: int = option(ServeConfig, "max_chat_chars"),
    max_file_bytes: int = option(ServeConfig, "max_file_bytes"),
    max_file_lines: int = option(ServeConfig, "max_file_lines"),
    models_loaded: int = option(ServeConfig, "models_loaded"),
    threads: int = option(ServeConfig, "threads", help="torch threads per forward pass (1 suits small "
                          "models: the rest serve HTTP)"),
    image_batch: int = option(ServeConfig, "image_batch"),
    image_queue: int = option(ServeConfig, "image_queue"),
    decode: str = option(ServeConfig, "decode", help=(
        "process: each text model decodes in its own process, off the HTTP process's lock "
        "(faster); thread: in the server's own process")),
    public_url: str | None = option(ServeConfig, "public_url", help=(
        "base URL clients reach the server at (image URLs start with it; default: the bind "
        "address, or relative URLs on 0.0.0.0)")),
    preload: Annotated[list[str], typer.Option(help="load these models before serving")] = [],
    worker: Annotated[bool, typer.Option(
        "--worker", help="start one `genloop worker` beside the server (it runs the fine-tuning "
        "jobs; stopped with the server)")] = False,
    log_level: Annotated[str, typer.Option(help="uvicorn log level")] = "info",
) -> None:
    """Serve every registered model over an OpenAI-compatible HTTP API, with the studio at /."""
    from genloop.errors import InvalidInput, validation_message
    from genloop.generation.service import TextModel, load
    from genloop.serving.app import run
    from genloop.serving.routers.text import decoding_loop
    from genloop.store import Store

    try:
        config = ServeConfig(host=host, port=port, auth=auth, max_batch=max_batch, max_queue=max_queue,
                             rate_limit=rate_limit, max_tokens=max_tokens, max_chat_chars=max_chat_chars,
                             max_file_bytes=max_file_bytes, max_file_lines=max_file_lines,
                             models_loaded=models_loaded, threads=threads, public_url=public_url,
                             decode=decode, image_batch=image_batch, image_queue=image_queue)
    except ValueError as e:
        raise InvalidInput(validation_message(e)) from None
    store = Store()
    for ref in preload:
        model = load(ref, store, models_loaded)
        if config.decode == "process" and isinstance(model, TextModel) and model.family.generative \
                and model.family.embed is None and model.family.slot_decoder is not None:
            decoding_loop(config, store.url, model)  # its process loads while the server starts
    if config.auth and not any(k.revoked_at is None for k in store.list_keys()):
        err.print("[yellow]no API key yet:[/] create one with [bold]genloop keys create NAME[/]")
    if not config.auth:
        err.print("[bold red]AUTH IS OFF:[/] every model and every generation is open to anyone "
                  f"who can reach {host}:{port}")
    out.print(f"genloop: serving on [bold]http://{host}:{port}[/] (studio at /, API at /v1)")
    beside = start_worker() if worker else None
    try:
        run(config, log_level=log_level)
    finally:
        if beside is not None:
            stop_worker(beside)


def start_worker() -> subprocess.Popen[bytes]:
    """``genloop worker`` as a child process over the same workspace (its environment); it
    stops when this process ends, however it ends (uvicorn re-raises SIGTERM after its shutdown,
    which kills this process before any cleanup here)."""
    process = subprocess.Popen([sys.executable, "-m", "genloop.cli.main", "worker",
                                "--parent", str(os.getpid())])
    err.print(f"genloop: fine-tuning worker started (pid {process.pid})")
    return process


def stop_worker(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM: the worker puts its job back in the queue and exits; killed after 30 s."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
