"""The Pulse bridge seen by a plain AMQP consumer written with pika, as Taskcluster's Python
consumers are: exchanges, routing keys, CC routes, bodies and message ids."""

import json
import time
import uuid

import pika
import pytest
import taskcluster

from test_queue import definition, queue, serve

AMQP = "amqp://guest:guest@127.0.0.1:5672/%2f"
Q = "exchange/taskcluster-queue/v1/"


@pytest.fixture(scope="module")
def pulse_root_url():
    yield from serve(TASKLEDGER_PULSE_URL=AMQP)


def wait_for_exchange(conn, name):
    """A failed passive declare closes its channel, so each probe opens a new one."""
    deadline = time.time() + 20
    while True:
        ch = conn.channel()
        try:
            ch.exchange_declare(name, exchange_type="topic", passive=True)
            ch.close()
            return
        except pika.exceptions.ChannelClosedByBroker:
            assert time.time() < deadline, f"{name} was never declared"
            time.sleep(0.1)


def test_a_pika_consumer_sees_a_task_run(pulse_root_url):
    conn = pika.BlockingConnection(pika.URLParameters(AMQP))
    names = ["task-defined", "task-pending", "task-running", "task-completed"]
    for n in names:
        wait_for_exchange(conn, Q + n)
    ch = conn.channel()
    mine = ch.queue_declare("", exclusive=True, auto_delete=True).method.queue
    task_id = taskcluster.slugId()
    route = "py.pulse." + task_id.replace("-", "x").replace("_", "y")
    for n in names:
        ch.queue_bind(mine, Q + n, routing_key=f"primary.{task_id}.#")
    routed = ch.queue_declare("", exclusive=True, auto_delete=True).method.queue
    ch.queue_bind(routed, Q + "task-completed", routing_key=f"route.{route}")

    tq = "py-pulse/wt-" + taskcluster.slugId().lower().replace("_", "x").replace("-", "y")[:10]
    d = definition(tq)
    d["routes"] = [route]
    q = queue(pulse_root_url)
    q.createTask(task_id, d)
    claim = q.claimWork(tq, {"tasks": 1, "workerGroup": "py", "workerId": "py-worker"})
    assert claim["tasks"][0]["status"]["taskId"] == task_id
    q.reportCompleted(task_id, "0")

    got = []
    deadline = time.time() + 20
    while len(got) < 4 and time.time() < deadline:
        method, props, body = ch.basic_get(mine, auto_ack=True)
        if method is None:
            time.sleep(0.05)
            continue
        got.append((method.exchange, method.routing_key, props, json.loads(body)))
    assert [g[0] for g in got] == [Q + n for n in names]
    prov, wt = tq.split("/")
    assert got[2][1] == f"primary.{task_id}.0.py.py-worker.{prov}.{wt}.-.{task_id}._"
    assert got[3][3]["status"]["state"] == "completed"
    assert got[3][3]["version"] == 1
    for _, _, props, _ in got:
        uuid.UUID(props.message_id)
        assert props.content_type == "application/json"
        assert props.delivery_mode == 2
        assert props.headers["CC"] == [f"route.{route}"]
    assert len({g[2].message_id for g in got}) == 4

    deadline = time.time() + 10
    while True:
        method, props, body = ch.basic_get(routed, auto_ack=True)
        if method is not None:
            break
        assert time.time() < deadline, "the CC'd route never arrived"
        time.sleep(0.05)
    assert json.loads(body)["status"]["taskId"] == task_id
    conn.close()
