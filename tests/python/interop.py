"""pynsq (the real NSQ client from PyPI) against a Ferry broker.

Usage: interop.py TCP_ADDR HTTP_ADDR

Publishes with nsq.Writer (PUB and MPUB over TCP) and with the HTTP /pub and /mpub endpoints,
consumes with nsq.Reader on two channels, two readers sharing one of them, and checks the counts
exactly: every message once per channel, both readers of the shared channel busy.
Exit code 0 on success; prints what went wrong otherwise.
"""
import collections
import sys
import urllib.request

import nsq
from tornado import ioloop

TCP, HTTP = sys.argv[1], sys.argv[2]
TOPIC = "interop"
N_PUB, N_MPUB_BATCHES, MPUB_SIZE, N_HTTP = 300, 10, 20, 100
EXPECTED = {f"pub-{i}".encode() for i in range(N_PUB)}
EXPECTED |= {f"mpub-{b}-{i}".encode() for b in range(N_MPUB_BATCHES) for i in range(MPUB_SIZE)}
EXPECTED |= {f"http-{i}".encode() for i in range(N_HTTP)}
EXPECTED |= {f"httpm-{i}".encode() for i in range(N_HTTP)}

loop = ioloop.IOLoop.current()
received = {"alpha": collections.Counter(), "beta": collections.Counter()}
per_reader = collections.Counter()
errors = []
published = {"tcp_acks": 0}


def post(path, body):
    req = urllib.request.Request(f"http://{HTTP}{path}", data=body, method="POST")
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 200, resp.status


def finish(ok):
    if not ok:
        print("FAILED:", *errors, sep="\n  ")
    print("received per channel:", {k: sum(v.values()) for k, v in received.items()})
    print("per reader:", dict(per_reader))
    loop.stop()
    sys.exit(0 if ok else 1)


def check_done():
    if errors:
        finish(False)
    if all(set(c) == EXPECTED for c in received.values()):
        dup = {ch: [m for m, n in c.items() if n != 1] for ch, c in received.items()}
        if any(dup.values()):
            errors.append(f"duplicates: {dup}")
            finish(False)
        if per_reader["alpha-1"] == 0 or per_reader["alpha-2"] == 0:
            errors.append(f"shared channel not load-balanced: {dict(per_reader)}")
            finish(False)
        if published["tcp_acks"] != N_PUB + N_MPUB_BATCHES:
            return  # wait for the last publish callbacks
        finish(True)


def handler(channel, name):
    def on_message(message):
        if message.body not in EXPECTED:
            errors.append(f"unexpected body {message.body!r}")
        received[channel][message.body] += 1
        per_reader[name] += 1
        loop.add_callback(check_done)
        return True

    return on_message


def on_published(conn, data):
    if isinstance(data, nsq.Error) or data != b"OK":
        errors.append(f"publish failed: {data!r}")
        return
    published["tcp_acks"] += 1
    loop.add_callback(check_done)


def publish_when_connected():
    if not writer.conns:
        loop.call_later(0.05, publish_when_connected)
        return
    for i in range(N_PUB):
        writer.pub(TOPIC, f"pub-{i}".encode(), callback=on_published)
    for b in range(N_MPUB_BATCHES):
        writer.mpub(TOPIC, [f"mpub-{b}-{i}".encode() for i in range(MPUB_SIZE)], callback=on_published)


# Channels first, so both get every message.
for ch in ("alpha", "beta"):
    post(f"/channel/create?topic={TOPIC}&channel={ch}", b"")
for i in range(N_HTTP):
    post(f"/pub?topic={TOPIC}", f"http-{i}".encode())
post(f"/mpub?topic={TOPIC}", "\n".join(f"httpm-{i}" for i in range(N_HTTP)).encode())

readers = [
    nsq.Reader(topic=TOPIC, channel="alpha", message_handler=handler("alpha", "alpha-1"),
               nsqd_tcp_addresses=[TCP], max_in_flight=20),
    nsq.Reader(topic=TOPIC, channel="alpha", message_handler=handler("alpha", "alpha-2"),
               nsqd_tcp_addresses=[TCP], max_in_flight=20),
    nsq.Reader(topic=TOPIC, channel="beta", message_handler=handler("beta", "beta-1"),
               nsqd_tcp_addresses=[TCP], max_in_flight=50),
]
writer = nsq.Writer([TCP])
loop.call_later(0.05, publish_when_connected)
loop.call_later(60, lambda: (errors.append("timed out after 60 s"), finish(False)))
nsq.run()
