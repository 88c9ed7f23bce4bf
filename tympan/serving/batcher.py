"""The micro-batcher: clips of concurrent requests through the model together, off the event loop."""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from tympan import bundle
from tympan.serving.inputs import Clip


@dataclass
class Pending:
    """One clip of a request, waiting for its result; `features` and their `cost` once featurised."""

    clip: Clip
    future: asyncio.Future
    features: Any = None
    cost: float = 0.0


@dataclass
class Request:
    """The clips of one request: those still to featurise (`todo`) and those featurised and waiting
    for the model (`ready`, with their total cost)."""

    todo: deque[Pending]
    ready: deque[Pending] = field(default_factory=deque)
    ready_cost: float = 0.0
    closed: bool = False

    def close(self) -> None:
        self.closed = True
        self.todo.clear()
        self.ready.clear()


class Turns:
    """Requests taking turns at one stage. A request that has not had a turn yet goes before those
    that have (in the order they came); after its turn it joins the back of the rotation. So a
    one-clip request's clip is next, however many clips another request has left."""

    def __init__(self):
        self.new: deque[Request] = deque()
        self.rotation: deque[Request] = deque()

    def add(self, request: Request) -> None:
        self.new.append(request)

    def take(self, can: Callable[[Request], bool]) -> Request | None:
        """The first request, in turn order, for which `can` holds; it moves to the back."""
        for queue in (self.new, self.rotation):
            for _ in range(len(queue)):
                request = queue.popleft()
                if request.closed:
                    continue
                if can(request):
                    self.rotation.append(request)
                    return request
                queue.append(request)
        return None


class MicroBatcher:
    """Runs the clips of concurrent requests through the model together, in two worker threads.

    The feature thread decodes and featurises one clip at a time (`featurize`), taking the
    requests in turn (`Turns`), so a small request never waits for another one's clips to be
    decoded; each request keeps at most one batch featurised ahead of the model. The model thread
    runs one batch at a time (`predict`): whatever is featurised, one clip of each request in turn,
    up to `max_batch` clips and `max_cost` (the clips' summed `cost`; the first clip always goes).
    With costs in seconds of audio, a one-clip request waits for at most about one batch of
    `max_cost` seconds ahead of it, however long the other requests' clips are. The event loop only
    moves clips and results.

    Measured on 2 CPU cores with 8 closed-loop clients (bench/serve_latency.py): batching what is
    waiting gave 10-30% more requests/s than one clip per forward, and waiting for more clips
    (2 ms) gave less; so a batch is what is waiting, and nothing waits for a batch to fill.
    """

    def __init__(
        self,
        featurize: Callable[[Clip], Any],
        predict: Callable[[list[Any], bool], list[bundle.Prediction]],
        max_batch: int = 16,
        max_cost: float = math.inf,
        cost: Callable[[Any], float] = lambda features: 1.0,
    ):
        self.featurize = featurize
        self.predict = predict
        self.max_batch = max(1, max_batch)
        self.max_cost = max_cost
        self.cost = cost
        self.to_featurize, self.to_predict = Turns(), Turns()
        self.feature_wake: asyncio.Event | None = None  # a request came, or the model took clips
        self.model_wake: asyncio.Event | None = None  # a clip is featurised
        self.feature_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tympan-features")
        self.model_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tympan-model")
        self.stages: list[asyncio.Task] = []

    def alive(self) -> bool:
        """False once a stage has stopped (each catches its own clips' errors, so only a bug or a
        cancellation stops one); True before the first request starts them."""
        return not any(stage.done() for stage in self.stages)

    async def submit(self, clips: list[Clip]) -> list[bundle.Prediction]:
        """Predictions for `clips`, in order. The first clip that fails fails the request with its
        error, and the request's clips that have not started are dropped."""
        loop = asyncio.get_running_loop()
        if not self.stages:  # started here, inside the server's event loop
            self.feature_wake, self.model_wake = asyncio.Event(), asyncio.Event()
            self.stages = [loop.create_task(self.featurize_clips()), loop.create_task(self.run_batches())]
        request = Request(deque(Pending(clip, loop.create_future()) for clip in clips))
        futures = [pending.future for pending in request.todo]
        self.to_featurize.add(request)
        self.to_predict.add(request)
        self.feature_wake.set()
        try:
            return list(await asyncio.gather(*futures))
        finally:
            request.close()
            for future in futures:
                future.cancel()  # no-op for settled ones; the rest are skipped

    def has_room(self, request: Request) -> bool:
        """Whether `request` has a clip to featurise and less than a batch featurised ahead."""
        return bool(request.todo) and len(request.ready) < self.max_batch and request.ready_cost < self.max_cost

    async def featurize_clips(self) -> None:
        """Stage one: the next clip in turn through `featurize` in the feature thread, into its
        request's `ready` queue."""
        loop = asyncio.get_running_loop()
        while True:
            request = self.to_featurize.take(self.has_room)
            if request is None:
                self.feature_wake.clear()
                await self.feature_wake.wait()
                continue
            pending = request.todo.popleft()
            try:
                pending.features = await loop.run_in_executor(self.feature_thread, self.featurize, pending.clip)
                pending.cost = self.cost(pending.features)
            except Exception as err:
                settle(pending, error=err)
                continue
            if not pending.future.done():  # its request may have failed or gone meanwhile
                request.ready.append(pending)
                request.ready_cost += pending.cost
                self.model_wake.set()

    def take_batch(self) -> list[Pending]:
        """Up to `max_batch` featurised clips, one of each request in turn, within `max_cost`."""
        batch, total = [], 0.0

        def fits(request: Request) -> bool:
            return bool(request.ready) and (not batch or total + request.ready[0].cost <= self.max_cost)

        while len(batch) < self.max_batch and (request := self.to_predict.take(fits)) is not None:
            pending = request.ready.popleft()
            request.ready_cost -= pending.cost
            batch.append(pending)
            total += pending.cost
        return batch

    async def run_batches(self) -> None:
        """Stage two: each batch through the model, in the model thread."""
        while True:
            batch = self.take_batch()
            if not batch:
                self.model_wake.clear()
                await self.model_wake.wait()
                continue
            self.feature_wake.set()  # the requests it took from have room again
            await self.predict_batch(batch)

    async def predict_batch(self, batch: list[Pending]) -> None:
        """Settle each clip's future; a failing batch is retried clip by clip, so one bad clip fails
        only its own request."""
        loop = asyncio.get_running_loop()
        features, embeddings = [p.features for p in batch], any(p.clip.embedding for p in batch)
        try:
            results = await loop.run_in_executor(self.model_thread, self.predict, features, embeddings)
        except Exception as err:
            if len(batch) > 1:
                for pending in batch:
                    await self.predict_batch([pending])
            else:
                settle(batch[0], error=err)
            return
        for pending, result in zip(batch, results, strict=True):
            settle(pending, result)


def settle(pending: Pending, result=None, error: Exception | None = None) -> None:
    if pending.future.done():  # its request already failed, or went away
        return
    if error is not None:
        pending.future.set_exception(error)
    else:
        pending.future.set_result(result)
    pending.features = None  # the result is out: free the clip's model input
