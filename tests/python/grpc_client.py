"""A Python gRPC client (grpcio from PyPI, stubs generated here from proto/) against Ferry.

Usage: grpc_client.py GRPC_ADDR PROTO_DIR

Generates the stubs of ferry/v1/broker.proto into a temporary directory with
`python -m grpc_tools.protoc`, then: publishes one message, a batch of 100 and a deferred one;
consumes them all on channel "py" with a Subscribe stream (credit 20, FIN each); checks that the
subscriber shows in Stats with grpc-python's user agent; checks that a bad topic is refused with
INVALID_ARGUMENT and NSQ's E_BAD_TOPIC; ends the stream by half-closing it.
Exit code 0 on success; prints what went wrong otherwise.
"""
import importlib
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time

ADDR, PROTO_DIR = sys.argv[1], sys.argv[2]
TOPIC, CHANNEL = "pygrpc", "py"
DEADLINE = 20  # seconds for the whole run


def fail(msg):
    print("FAILED:", msg)
    sys.exit(1)


def generate_stubs(out):
    cmd = [
        sys.executable, "-m", "grpc_tools.protoc",
        f"-I{PROTO_DIR}", f"--python_out={out}", f"--grpc_python_out={out}",
        os.path.join(PROTO_DIR, "ferry", "v1", "broker.proto"),
    ]
    subprocess.run(cmd, check=True)
    sys.path.insert(0, out)
    return (importlib.import_module("ferry.v1.broker_pb2"),
            importlib.import_module("ferry.v1.broker_pb2_grpc"))


def main():
    import grpc

    with tempfile.TemporaryDirectory() as out:
        pb, pb_grpc = generate_stubs(out)
        channel = grpc.insecure_channel(ADDR)
        grpc.channel_ready_future(channel).result(timeout=10)
        stub = pb_grpc.BrokerStub(channel)

        # The subscriber first, so the channel exists before anything is published.
        requests = queue.Queue()

        def request_iter():
            while True:
                req = requests.get()
                if req is None:
                    return  # half-close
                yield req

        requests.put(pb.SubscribeRequest(open=pb.Open(topic=TOPIC, channel=CHANNEL, max_in_flight=20)))
        responses = stub.Subscribe(request_iter(), timeout=DEADLINE)
        first = next(responses)
        if first.WhichOneof("event") != "subscribed":
            fail(f"expected subscribed, got {first}")

        expected = {b"single"} | {f"batch-{i}".encode() for i in range(100)} | {b"deferred"}
        r = stub.Publish(pb.PublishRequest(topic=TOPIC, bodies=[b"single"]), timeout=10)
        if r.count != 1 or len(r.first_id) != 16:
            fail(f"bad publish reply {r}")
        batch = [f"batch-{i}".encode() for i in range(100)]
        r = stub.Publish(pb.PublishRequest(topic=TOPIC, bodies=batch), timeout=10)
        if r.count != 100:
            fail(f"bad batch reply {r}")
        deferred_at = time.monotonic()
        stub.Publish(pb.PublishRequest(topic=TOPIC, bodies=[b"deferred"], defer_ms=300), timeout=10)

        received = {}
        deferred_after = None
        for resp in responses:
            kind = resp.WhichOneof("event")
            if kind != "messages":
                fail(f"unexpected event {resp}")
            for m in resp.messages.messages:
                if m.body in received:
                    fail(f"duplicate {m.body!r}")
                if m.attempts != 1 or len(m.id) != 16 or m.timestamp_ns <= 0:
                    fail(f"bad message {m}")
                received[m.body] = m.id
                if m.body == b"deferred":
                    deferred_after = time.monotonic() - deferred_at
                requests.put(pb.SubscribeRequest(fin=pb.Finish(id=m.id)))
            if set(received) == expected:
                break
        if set(received) != expected:
            fail(f"missing {sorted(expected - set(received))[:5]}")
        if deferred_after is None or deferred_after < 0.25:
            fail(f"deferred message came after {deferred_after}s, expected >= 0.3s")

        # The subscriber is a client of the channel, with grpc-python's user agent.
        clients = []
        end = time.monotonic() + 10
        while time.monotonic() < end:
            stats = stub.Stats(pb.StatsRequest(topic=TOPIC, channel=CHANNEL), timeout=10)
            ch = stats.topics[0].channels[0]
            clients = list(ch.clients)
            if ch.in_flight_count == 0 and ch.message_count == len(expected):
                break
            time.sleep(0.02)
        else:
            fail(f"channel never settled: {stats}")
        if len(clients) != 1 or "grpc-python" not in clients[0].user_agent:
            fail(f"expected one grpc-python client, got {clients}")
        if clients[0].finish_count != len(expected):
            fail(f"finish_count {clients[0].finish_count}")

        try:
            stub.Publish(pb.PublishRequest(topic="bad topic", bodies=[b"x"]), timeout=10)
            fail("bad topic accepted")
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.INVALID_ARGUMENT or not e.details().startswith("E_BAD_TOPIC"):
                fail(f"bad topic: {e.code()} {e.details()}")

        # Half-close: the broker ends the stream cleanly.
        requests.put(None)
        for resp in responses:
            fail(f"unexpected event after half-close {resp}")
        channel.close()
        print(f"ok: {len(received)} messages, deferred after {deferred_after:.3f}s, "
              f"user agent {clients[0].user_agent!r}")


if __name__ == "__main__":
    timer = threading.Timer(DEADLINE + 10, lambda: os._exit(2))
    timer.daemon = True
    timer.start()
    main()
