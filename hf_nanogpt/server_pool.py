"""The chat server's worker queue: `workers` generations at once, at most `max_queue` waiting, FIFO.

Admission is decided once per request, synchronously on the event loop (`WorkerPool.admit`): a
request is admitted while fewer than `workers + max_queue` requests hold a ticket, and refused with
503 otherwise. The check and the count happen with no `await` between them, so a burst of N
simultaneous requests admits exactly `workers + max_queue` of them whatever the timing (the slot
semaphore alone could not say so: a waiter counts as running only a loop tick after it is woken).

A ticket is released when its generation thread has stopped, or, for a request that never reached a
worker (its client left while queued, or its response was never sent), when the request ends.
"""

import asyncio
import threading

from .server_guard import ApiError


class Ticket:
    """One admitted request's place in the pool; `release()` is idempotent."""

    def __init__(self, pool: "WorkerPool"):
        self.pool, self.running, self.released = pool, False, False

    def release(self) -> None:
        if not self.released:
            self.released = True
            self.pool.admitted -= 1

    def release_if_idle(self) -> None:
        """Release unless a generation thread owns the ticket (that thread releases it when it stops)."""
        if not self.running:
            self.release()


class WorkerPool:
    """At most `workers` generations run at once; the rest wait in FIFO order (asyncio.Semaphore is
    fair), at most `max_queue` of them. A slot is freed when the generation thread has stopped."""

    def __init__(self, workers: int, max_queue: int):
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        if max_queue < 0:
            raise ValueError(f"max_queue must be >= 0, got {max_queue}")
        self.workers, self.max_queue = workers, max_queue
        self.busy = self.admitted = self.served = 0
        self._slots: asyncio.Semaphore | None = None  # created inside the server's event loop

    @property
    def queued(self) -> int:
        return self.admitted - self.busy

    def stats(self) -> dict:
        return {"workers": self.workers, "busy": self.busy, "queued": self.queued, "served": self.served,
                "max_queue": self.max_queue}

    def admit(self) -> Ticket:
        """A ticket for a new request, or ApiError 503 when every slot and queue place is taken.
        Call on the event loop thread, without awaiting between the call and using the ticket."""
        if self.admitted >= self.workers + self.max_queue:
            raise ApiError(503, f"server busy: {self.workers} requests generating and {self.queued} queued "
                           f"(max_queue {self.max_queue}); retry later", kind="server_busy")
        self.admitted += 1
        return Ticket(self)

    def _abandon(self, acquire: asyncio.Future) -> None:
        """Give up a pending or finished slot acquisition without leaking the slot."""
        if acquire.done():
            if not acquire.cancelled() and acquire.exception() is None:
                self._slots.release()
        else:  # Semaphore.acquire passes a wake-up it received on to the next waiter when cancelled
            acquire.cancel()

    async def stream(self, ticket: Ticket, generate, wait_for_disconnect):
        """Run the blocking iterator factory `generate()` in a worker thread; yield its items here.

        `ticket` comes from `admit()`. `wait_for_disconnect()` returns an awaitable that completes
        when the client goes away: the generation is then cancelled at its next step (or never
        starts, if it was still queued), and the slot returns to the pool once the thread has stopped.
        """
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.workers)
        loop = asyncio.get_running_loop()
        items: asyncio.Queue = asyncio.Queue()
        cancel = threading.Event()
        watcher = asyncio.ensure_future(wait_for_disconnect())
        watcher.add_done_callback(lambda _: (cancel.set(), items.put_nowait(("cancelled", None))))
        acquire = asyncio.ensure_future(self._slots.acquire())
        try:
            await asyncio.wait([acquire, watcher], return_when=asyncio.FIRST_COMPLETED)
        except BaseException:  # this request was cancelled while queued
            self._abandon(acquire)
            watcher.cancel()
            ticket.release()
            raise
        if not acquire.done() or cancel.is_set():  # the client left while queued
            self._abandon(acquire)
            watcher.cancel()
            ticket.release()
            return
        self.busy += 1
        ticket.running = True

        def release() -> None:
            self.busy -= 1
            self.served += 1
            ticket.release()
            self._slots.release()

        def post(kind, value) -> None:
            try:
                loop.call_soon_threadsafe(items.put_nowait, (kind, value))
            except RuntimeError:  # the event loop is gone (server shutting down)
                pass

        def work() -> None:
            try:
                iterator = generate()
                for item in iterator:
                    if cancel.is_set():
                        iterator.close()
                        break
                    post("item", item)
            except Exception as err:  # reported to the client; the worker survives
                post("error", err)
            finally:
                post("done", None)
                try:
                    loop.call_soon_threadsafe(release)
                except RuntimeError:
                    pass

        threading.Thread(target=work, name="hf_nanogpt-generate", daemon=True).start()
        try:
            while True:
                kind, value = await items.get()
                if kind == "item":
                    yield value
                elif kind == "error":
                    raise value
                else:  # done or cancelled
                    return
        finally:
            cancel.set()
            watcher.cancel()


__all__ = ["Ticket", "WorkerPool"]
