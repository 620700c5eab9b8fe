"""The worker queue (hf_nanogpt.server_pool) under bursts, on a REAL loopback server: N requests sent at
the same instant admit exactly workers + max_queue of them and refuse the rest with 503, streamed or
not, whatever the timing. The model is gated (its forward waits on an event) so nothing finishes
while the burst is counted: no sleeps, only waits on conditions."""

import threading

import httpx
import pytest

pytest.importorskip("fastapi", reason="the serve extra is not installed: pip install -e '.[serve]'")
pytest.importorskip("uvicorn", reason="the serve extra is not installed: pip install -e '.[serve]'")

from hf_nanogpt.server import create_app
from hf_nanogpt.server_pool import WorkerPool

from test_server import USER, live_server, sse_events, tiny_chat_model, wait_for  # noqa: E402


def gated_model(tokenizer):
    """A tiny model whose every forward waits until `model.gate` is set."""
    model = tiny_chat_model(tokenizer, seed=3)
    model.gate = threading.Event()
    model.register_forward_hook(lambda module, args, output: module.gate.wait(60) and None)
    return model


@pytest.mark.parametrize("clients, workers, max_queue", [(10, 2, 2), (6, 1, 0)])
def test_a_burst_admits_exactly_workers_plus_max_queue(tiny_tokenizer, clients, workers, max_queue):
    model = gated_model(tiny_tokenizer)
    admitted = workers + max_queue
    statuses, bodies = {}, {}
    start = threading.Barrier(clients)

    def client(i: int) -> None:
        body = {"messages": USER, "max_tokens": 3, "stream": i % 2 == 0}
        start.wait()  # every request leaves at the same instant
        with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=120) as r:
            statuses[i] = r.status_code
            bodies[i] = sse_events(r) if r.status_code == 200 and body["stream"] else r.read()

    with live_server(create_app(model, tiny_tokenizer, workers=workers, max_queue=max_queue)) as url:
        health = lambda: httpx.get(f"{url}/health").json()  # noqa: E731
        threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
        for t in threads:
            t.start()
        # the refused ones are answered at once; the admitted ones wait on the gate
        assert wait_for(lambda: list(statuses.values()).count(503) == clients - admitted, timeout=60)
        assert wait_for(lambda: health()["busy"] == workers and health()["queued"] == max_queue)
        model.gate.set()
        for t in threads:
            t.join(timeout=120)
        final = health()
    assert sorted(statuses.values()) == [200] * admitted + [503] * (clients - admitted)
    assert final["served"] == admitted and final["busy"] == 0 and final["queued"] == 0
    for i, status in statuses.items():
        if status == 200 and i % 2 == 0:
            assert bodies[i][-1] == "[DONE]"


def test_pool_arguments_are_checked():
    with pytest.raises(ValueError, match="workers must be >= 1, got 0"):
        WorkerPool(0, 4)
    with pytest.raises(ValueError, match="max_queue must be >= 0, got -1"):
        WorkerPool(1, -1)
    pool = WorkerPool(1, 1)
    tickets = [pool.admit(), pool.admit()]
    with pytest.raises(Exception, match="server busy"):
        pool.admit()
    tickets[0].release()
    tickets[0].release()  # idempotent
    assert pool.stats()["queued"] == 1
    pool.admit()
