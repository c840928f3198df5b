"""pynsq with TLS, snappy, deflate (and their combinations) against a Ferry broker.

Usage: secure.py TCP_ADDR TOPIC OPTIONS CA_FILE [CLIENT_CERT CLIENT_KEY]

OPTIONS is a '+'-separated list of tls, snappy, deflate, auth (AUTH with the secret
"pynsq-secret"). A Writer publishes N messages (PUB and
MPUB) and a Reader consumes them on one channel, both with the same options; every message must
arrive exactly once. Prints "ok N" and exits 0 on success.
"""
import collections
import ssl
import sys

import nsq
from tornado import ioloop, iostream

TCP, TOPIC, OPTIONS, CA = sys.argv[1:5]
CLIENT_CERT = sys.argv[5] if len(sys.argv) > 6 else None
CLIENT_KEY = sys.argv[6] if len(sys.argv) > 6 else None
opts = set(OPTIONS.split("+")) - {""}
N_PUB, N_MPUB = 100, 100
EXPECTED = {f"p-{i}".encode() for i in range(N_PUB)} | {f"m-{i}".encode() for i in range(N_MPUB)}

conn_args = {}
if "tls" in opts:
    tls_options = {"cert_reqs": ssl.CERT_REQUIRED, "ca_certs": CA}
    if CLIENT_CERT:
        tls_options.update(certfile=CLIENT_CERT, keyfile=CLIENT_KEY)
    conn_args.update(tls_v1=True, tls_options=tls_options)
if "snappy" in opts:
    conn_args["snappy"] = True
if "deflate" in opts:
    conn_args.update(deflate=True, deflate_level=6)
if "auth" in opts:
    conn_args["auth_secret"] = "pynsq-secret"

loop = ioloop.IOLoop.current()
received = collections.Counter()
errors = []
acks = {"n": 0}


def finish(ok):
    if not ok:
        print("FAILED:", *errors, sep="\n  ")
    print(f"received {sum(received.values())} distinct {len(received)} acks {acks['n']}")
    loop.stop()
    sys.exit(0 if ok else 1)


def check():
    if errors:
        finish(False)
    if set(received) == EXPECTED and acks["n"] == N_PUB + 1:
        dup = [m for m, n in received.items() if n != 1]
        if dup:
            errors.append(f"duplicates: {dup[:5]}")
        features()
        if errors:
            finish(False)
        print(f"ok {len(received)}")
        finish(True)


def on_message(message):
    if message.body not in EXPECTED:
        errors.append(f"unexpected body {message.body!r}")
    received[message.body] += 1
    loop.add_callback(check)
    return True


def on_ack(conn, data):
    if isinstance(data, nsq.Error) or data != b"OK":
        errors.append(f"publish failed: {data!r}")
    acks["n"] += 1
    loop.add_callback(check)


writer = nsq.Writer([TCP], **conn_args)


def publish():
    if not writer.conns:
        loop.call_later(0.05, publish)
        return
    for i in range(N_PUB):
        writer.pub(TOPIC, f"p-{i}".encode(), on_ack)
    writer.mpub(TOPIC, [f"m-{i}".encode() for i in range(N_MPUB)], on_ack)


def features():
    """The features each reader connection negotiated, checked once connected."""
    conns = list(reader.conns.values()) + list(writer.conns.values())
    if len(conns) != 2:
        errors.append(f"expected 2 connections, have {len(conns)}")
    for conn in conns:
        encoder = type(conn.encoder).__name__
        if ("tls" in opts) != isinstance(conn.stream, iostream.SSLIOStream):
            errors.append(f"TLS state wrong: {type(conn.stream).__name__}")
        if ("snappy" in opts) != (encoder == "SnappyEncoder"):
            errors.append(f"snappy state wrong: {encoder}")
        if ("deflate" in opts) != (encoder == "DeflateEncoder"):
            errors.append(f"deflate state wrong: {encoder}")


reader = nsq.Reader(
    message_handler=on_message,
    nsqd_tcp_addresses=[TCP],
    topic=TOPIC,
    channel="secure",
    max_in_flight=50,
    **conn_args,
)
loop.call_later(0.2, publish)
loop.call_later(30, lambda: (errors.append("timed out"), finish(False)))
nsq.run()
