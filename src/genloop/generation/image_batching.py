"""Image batching: one sampling loop per image model, shared by every concurrent request.

Text's continuous batching (``generation/batching.py``) lets sequences join between decoding
steps; a diffusion sampler is a fixed walk down one timestep schedule, so here requests that
arrive close together share the whole walk instead: the loop waits ``window_s`` after the first
request of a run, then stacks every waiting request with the same sampler settings (steps,
sampler, guidance; ``ImageDraw.batch_key``) into one ``family.sample`` call of at most
``max_batch`` images, so the U-Net runs once per step on all of them. A request arriving while a
run goes waits for the next one (the waiting ones with another key for a later one, oldest
first). GAN and VAE requests batch the same way: their one forward pass is shared.

Each image keeps its own ``torch.Generator`` (``generate_images``' rule), so an image depends
only on (model, class or prompt, seed, settings), never on the requests it was stacked with.
The queue is bounded: ``submit`` raises ``Busy`` (HTTP 503) when ``max_queue`` requests (at
least one) wait for a run.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field

import torch

from genloop.errors import GenloopError
from genloop.generation.batching import Busy
from genloop.generation.image import ImageDraw, ImageOutput, finish_images, sample_draws
from genloop.models.family import Family


class ImageTicket:
    """One submitted draw; ``result()`` waits for its images (or raises the run's error)."""

    def __init__(self, draw: ImageDraw):
        self.draw = draw
        self.submitted = time.perf_counter()
        self._done = threading.Event()
        self._output: ImageOutput | None = None
        self._error: BaseException | None = None

    def result(self, timeout: float | None = None) -> ImageOutput:
        if not self._done.wait(timeout):
            raise TimeoutError(f"image generation did not finish within {timeout} s")
        if self._error is not None:
            raise self._error
        assert self._output is not None
        return self._output

    def _finish(self, output: ImageOutput | None, error: BaseException | None = None) -> None:
        self._output, self._error = output, error
        self._done.set()


@dataclass
class RunStats:
    """What the loop has done, for tests, metrics and benchmarks."""

    runs: int = 0
    images: int = 0
    requests: int = 0
    largest: int = 0  # most images in one run
    sizes: list[int] = field(default_factory=list)  # the last runs' image counts (up to 100)


class ImageBatcher:
    """The sampling loop of one image model; ``submit`` is thread-safe and never blocks."""

    def __init__(self, family: Family, network: torch.nn.Module, *, max_batch: int = 16,
                 max_queue: int = 16, window_s: float = 0.01):
        if max_batch < 1 or max_queue < 0 or window_s < 0:
            raise ValueError("max_batch ≥ 1, max_queue ≥ 0 and window_s ≥ 0")
        self.family, self.network = family, network
        self.max_batch, self.max_queue, self.window_s = max_batch, max_queue, window_s
        self.stats = RunStats()
        self._waiting: deque[ImageTicket] = deque()
        self._cond = threading.Condition()
        self._running = 0  # requests in the run going now
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name=f"images-{family.name}", daemon=True)
        self._thread.start()

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    @property
    def running(self) -> int:
        return self._running

    def submit(self, draw: ImageDraw) -> ImageTicket:
        """Queue ``draw`` for the next run it fits; ``Busy`` when ``max_queue`` already wait."""
        ticket = ImageTicket(draw)
        with self._cond:
            if self._closed:
                raise GenloopError("the image batcher is closed")
            if len(self._waiting) >= max(self.max_queue, 1):  # one can always wait for a run
                raise Busy(f"image generation busy: {self._running} requests sampling and "
                           f"{len(self._waiting)} waiting; retry later", retry_after=2)
            self._waiting.append(ticket)
            self._cond.notify()
        return ticket

    def generate(self, draw: ImageDraw, timeout: float | None = None) -> ImageOutput:
        """``submit`` and wait: what ``generate_images`` returns for the draw alone."""
        return self.submit(draw).result(timeout)

    def close(self) -> None:
        """Stop the loop after the run going now; waiting requests fail."""
        with self._cond:
            self._closed = True
            left = list(self._waiting)
            self._waiting.clear()
            self._cond.notify_all()
        for ticket in left:
            ticket._finish(None, GenloopError("the image batcher was closed"))

    # --- the loop -----------------------------------------------------------------------------

    def _take(self) -> list[ImageTicket]:
        """The next run: the oldest waiting request and every later one with its batch key, up
        to ``max_batch`` images (one request over it runs alone; a keyless one always does)."""
        first = self._waiting.popleft()
        group, images = [first], first.draw.sample.num_samples
        key = first.draw.batch_key
        if key is None:
            return group
        kept: deque[ImageTicket] = deque()
        while self._waiting:
            t = self._waiting.popleft()
            n = t.draw.sample.num_samples
            if t.draw.batch_key == key and images + n <= self.max_batch:
                group.append(t)
                images += n
            else:
                kept.append(t)
        self._waiting.extendleft(reversed(kept))
        return group

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._waiting and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
            if self.window_s:  # let requests sent together arrive before the run starts
                time.sleep(self.window_s)
            with self._cond:
                if not self._waiting:
                    continue
                group = self._take()
                self._running = len(group)
            self._run(group)
            with self._cond:
                self._running = 0

    def _run(self, group: list[ImageTicket]) -> None:
        t0 = time.perf_counter()
        try:
            xs = sample_draws(self.family, self.network, [t.draw for t in group])
        except BaseException as e:  # noqa: BLE001 - every waiting request learns why
            for t in group:
                t._finish(None, e)
            return
        total = time.perf_counter() - t0
        images = sum(t.draw.sample.num_samples for t in group)
        s = self.stats
        s.runs, s.images, s.requests = s.runs + 1, s.images + images, s.requests + len(group)
        s.largest = max(s.largest, images)
        s.sizes = [*s.sizes[-99:], images]
        for t, x in zip(group, xs, strict=True):
            n = t.draw.sample.num_samples
            timings = {"total_s": total, "images_per_s": n / max(total, 1e-9),
                       "queue_s": t0 - t.submitted, "batch_images": float(images)}
            try:
                t._finish(finish_images(t.draw, x, timings))
            except BaseException as e:  # noqa: BLE001
                t._finish(None, e)


__all__ = ["ImageBatcher", "ImageTicket", "RunStats"]
