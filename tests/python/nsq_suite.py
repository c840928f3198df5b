"""The scenarios of NSQ's client test suites, run with pynsq against Ferry started as they start nsqd.

Usage: nsq_suite.py BIN_DIR CERT KEY CA

BIN_DIR holds `nsqd` and `nsqlookupd`: Ferry's brokerd and lookupd under NSQ's names. pynsq's
and go-nsq's integration tests start those binaries with command lines such as
`nsqd --verbose --snappy --tls-key=K --tls-cert=C`, `nsqd --verbose -lookupd-tcp-address=...`,
`nsqlookupd --verbose -broadcast-address=127.0.0.1` (some flags single-dash) and expect nsqd's
behaviour. Each scenario below starts the daemons with exactly those flags, plus loopback
listen addresses on free ports (the suites use 4150-4152 / 4160-4161), runs pynsq against them,
and SIGKILLs them, as the suites do. Prints "ok <scenario>" per scenario; exits 0 when all pass.
"""
import os
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request

import nsq
from nsq import protocol
from nsq.conn import AsyncConn
from nsq.deflate_socket import DeflateSocket
from nsq.snappy_socket import SnappySocket
from tornado import httpserver, ioloop, web

BIN_DIR, CERT, KEY, CA = sys.argv[1:5]
DEADLINE = 20.0
SECRET = "opensesame"

# Options pynsq's suite identifies with (plus the transport under test).
BASE_OPTIONS = {
    "user_agent": "sup",
    "heartbeat_interval": 10,
    "output_buffer_size": 4096,
    "output_buffer_timeout": 50,
}
TLS_NO_VERIFY = {"tls_v1": True, "tls_options": {"cert_reqs": ssl.CERT_NONE}}
TLS_VERIFY = {"tls_v1": True, "tls_options": {"cert_reqs": ssl.CERT_REQUIRED, "ca_certs": CA}}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Daemons:
    """nsqd (and nsqlookupd) processes started from BIN_DIR, SIGKILLed at the end."""

    def __init__(self):
        self.procs = []
        self.dirs = []

    def start(self, name, flags, listen, ping_port):
        data = tempfile.TemporaryDirectory(prefix=f"suite-{name}-")
        self.dirs.append(data)
        # The suites rely on nsqd's default --data-path: the working directory.
        proc = subprocess.Popen([os.path.join(BIN_DIR, name)] + flags + listen, cwd=data.name,
                                stderr=open(os.path.join(data.name, "stderr.log"), "wb"))
        self.procs.append((proc, data.name))
        wait_ping(f"http://127.0.0.1:{ping_port}/ping", proc, data.name)
        return data.name

    def nsqd(self, flags):
        self.tcp, self.http = free_port(), free_port()
        listen = [f"--tcp-address=127.0.0.1:{self.tcp}", f"--http-address=127.0.0.1:{self.http}",
                  f"--https-address=127.0.0.1:{free_port()}", "--grpc-address=127.0.0.1:0",
                  "--broadcast-address=127.0.0.1"]
        return self.start("nsqd", flags, listen, self.http)

    def nsqlookupd(self, flags):
        self.lookup_tcp, self.lookup_http = free_port(), free_port()
        listen = [f"--tcp-address=127.0.0.1:{self.lookup_tcp}",
                  f"--http-address=127.0.0.1:{self.lookup_http}"]
        return self.start("nsqlookupd", flags, listen, self.lookup_http)

    def stop(self):
        for proc, _ in self.procs:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        for d in self.dirs:
            d.cleanup()


def wait_ping(url, proc, data_dir):
    start = time.time()
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.read() == b"OK":
                    return
        except OSError:
            pass
        if proc.poll() is not None or time.time() - start > DEADLINE:
            with open(os.path.join(data_dir, "stderr.log")) as f:
                raise SystemExit(f"{url} never answered OK; stderr:\n{f.read()}")
        time.sleep(0.05)


class Waiter:
    """Runs the IOLoop until done() is called, failing after DEADLINE seconds."""

    def __init__(self, what):
        self.what = what
        self.loop = ioloop.IOLoop.current()
        self.result = None
        self.finished = False

    def done(self, result=None):
        if not self.finished:
            self.finished = True
            self.result = result
            self.loop.stop()

    def wait(self):
        handle = self.loop.call_later(DEADLINE, self.loop.stop)
        self.loop.start()
        self.loop.remove_timeout(handle)
        if not self.finished:
            raise AssertionError(f"timed out waiting for {self.what}")
        return self.result


def send_messages(d, topic, count, body, **options):
    """Publishes `count` copies of `body` with PUB on one AsyncConn, as pynsq's suite does."""
    published = Waiter(f"{count} PUB acks on {topic}")
    acks = {"n": 0}
    c = AsyncConn("127.0.0.1", d.tcp, **options)

    def on_response(conn, data, **_):
        if data == b"OK":
            acks["n"] += 1
            if acks["n"] == count:
                published.done()

    def on_ready(*_args, **_kwargs):
        c.on("response", on_response)
        for _ in range(count):
            c.send(protocol.pub(topic, body))

    c.on("ready", on_ready)
    c.on("error", lambda conn, error, **_: published.done(error))
    c.connect()
    error = published.wait()
    assert error is None, f"publish failed: {error}"
    c.close()


def identify(d, **options):
    w = Waiter("IDENTIFY response")
    c = AsyncConn("127.0.0.1", d.tcp, **options)
    c.on("identify_response", lambda conn, data, **_: w.done(data))
    c.connect()
    data = w.wait()
    assert isinstance(data, dict), data
    return c, data


def ready_conn(d, **options):
    w = Waiter("connection ready")
    c = AsyncConn("127.0.0.1", d.tcp, **options)
    c.on("ready", lambda *a, **k: w.done())
    c.on("error", lambda conn, error, **_: w.done(error))
    c.connect()
    error = w.wait()
    assert error is None, f"connection failed: {error}"
    return c


def subscribe(c, topic, channel):
    w = Waiter(f"SUB {topic}/{channel}")
    c.on("response", lambda conn, data, **_: w.done(data))
    c.on("error", lambda conn, error, **_: w.done(error))
    c.send(protocol.subscribe(topic, channel))
    return w.wait()


def read_all(topic, count, body=None, **reader_args):
    w = Waiter(f"{count} messages on {topic}")
    seen = []

    def handler(msg):
        if body is not None:
            assert msg.body == body, msg.body
        seen.append(msg.body)
        if len(seen) >= count:
            w.done()
        return True

    r = nsq.Reader(topic=topic, channel="ch", message_handler=handler, max_in_flight=100,
                   **reader_args)
    w.wait()
    r.close()
    return seen


def scenario_tls_snappy(d):
    d.nsqd(["--verbose", "--snappy", f"--tls-key={KEY}", f"--tls-cert={CERT}"])
    options = dict(BASE_OPTIONS, snappy=True, **TLS_NO_VERIFY)
    # (pynsq's suite leaves this connection alone: it is mid-upgrade when the reply arrives.)
    _, data = identify(d, **options)
    assert data["snappy"] is True and data["tls_v1"] is True, data
    c = ready_conn(d, **options)
    assert isinstance(c.socket, SnappySocket), c.socket
    assert isinstance(c.socket._socket, ssl.SSLSocket), c.socket._socket
    topic = f"test_conn_subscribe_{time.time()}"
    assert subscribe(c, topic, "ch") == b"OK"
    c.close()
    topic = f"test_reader_msgs_{time.time()}"
    send_messages(d, topic, 500, b"sup")
    got = read_all(topic, 500, b"sup", nsqd_tcp_addresses=[f"127.0.0.1:{d.tcp}"], **options)
    assert len(got) == 500

    beats = Waiter("two heartbeats")
    count = {"n": 0}

    class HeartbeatReader(nsq.Reader):
        def heartbeat(self, conn):
            count["n"] += 1
            if count["n"] == 2:
                beats.done()

    r = HeartbeatReader(nsqd_tcp_addresses=[f"127.0.0.1:{d.tcp}"], topic=f"hb_{time.time()}",
                        channel="ch", message_handler=lambda m: True, max_in_flight=100,
                        heartbeat_interval=1)
    beats.wait()
    r.close()


def scenario_tls_deflate(d):
    d.nsqd(["--verbose", "--deflate", f"--tls-key={KEY}", f"--tls-cert={CERT}"])
    options = dict(BASE_OPTIONS, deflate=True, deflate_level=6, **TLS_NO_VERIFY)
    _, data = identify(d, **options)
    assert data["deflate"] is True and data["tls_v1"] is True, data
    c = ready_conn(d, **options)
    assert isinstance(c.socket, DeflateSocket), c.socket
    assert isinstance(c.socket._socket, ssl.SSLSocket), c.socket._socket
    c.close()
    topic = f"deflate_{time.time()}"
    send_messages(d, topic, 50, b"squeeze")
    got = read_all(topic, 50, b"squeeze", nsqd_tcp_addresses=[f"127.0.0.1:{d.tcp}"], **options)
    assert len(got) == 50


def scenario_lookupd(d):
    d.nsqlookupd(["--verbose", "-broadcast-address=127.0.0.1"])
    d.nsqd(["--verbose", f"-lookupd-tcp-address=127.0.0.1:{d.lookup_tcp}"])
    topic = f"test_lookupd_msgs_{int(time.time())}"
    send_messages(d, topic, 1, b"sup")
    got = read_all(topic, 1, b"sup", lookupd_http_addresses=[f"http://127.0.0.1:{d.lookup_http}"],
                   lookupd_poll_interval=1, lookupd_poll_jitter=0.01, **BASE_OPTIONS)
    assert got == [b"sup"]


def auth_server(permissions_for_topic):
    """An auth server like the suites': secret "opensesame" is granted the given permissions."""

    class Auth(web.RequestHandler):
        def get(self):
            if self.get_argument("secret") != SECRET:
                self.set_status(403)
                return
            self.finish({
                "ttl": 30,
                "identity": "username",
                "authorizations": [{"permissions": perms, "topic": topic, "channels": [".*"]}
                                   for topic, perms in permissions_for_topic.items()],
            })

    sock, port = None, None
    server = httpserver.HTTPServer(web.Application([("/auth", Auth)]))
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    sock.setblocking(False)
    port = sock.getsockname()[1]
    server.add_socket(sock)
    return server, port


def scenario_auth(d):
    server, port = auth_server({"authtopic": ["subscribe"]})
    d.nsqd(["--verbose", f"--auth-http-address=127.0.0.1:{port}"])
    c = ready_conn(d, auth_secret=SECRET, **BASE_OPTIONS)
    assert subscribe(c, "authtopic", "ch") == b"OK"
    c.close()
    c = ready_conn(d, auth_secret=SECRET, **BASE_OPTIONS)
    refused = subscribe(c, "othertopic", "ch")
    assert "E_UNAUTHORIZED" in str(refused), refused
    c.close()
    server.stop()


def scenario_go_nsq_command_line(d):
    """Everything at once, as go-nsq's suite starts nsqd: TLS with a root CA, snappy, deflate,
    AUTH and lookupd; a Writer and a Reader found through lookupd, both verifying the broker."""
    server, port = auth_server({"suite": ["publish", "subscribe"]})
    d.nsqlookupd(["-verbose", "--broadcast-address=127.0.0.1"])
    data_dir = tempfile.TemporaryDirectory(prefix="suite-data-")
    d.dirs.append(data_dir)
    d.nsqd([f"--data-path={data_dir.name}", "--verbose",
            f"-lookupd-tcp-address=127.0.0.1:{d.lookup_tcp}", f"--tls-cert={CERT}",
            f"-tls-key={KEY}", f"--tls-root-ca-file={CA}", "--snappy", "-deflate",
            f"--auth-http-address=127.0.0.1:{port}"])
    loop = ioloop.IOLoop.current()
    published = Waiter("Writer acks")
    acks = {"n": 0}
    writer = nsq.Writer([f"127.0.0.1:{d.tcp}"], auth_secret=SECRET, snappy=True, **TLS_VERIFY)
    bodies = [f"m-{i}".encode() for i in range(100)]

    def on_pub(conn, data):
        if isinstance(data, Exception):
            published.done(data)
            return
        acks["n"] += 1
        if acks["n"] == 2:
            published.done()

    def publish():
        if not writer.conns:
            loop.call_later(0.05, publish)
            return
        writer.mpub("suite", bodies[:50], callback=on_pub)
        writer.pub("suite", bodies[50], callback=on_pub)

    loop.call_later(0.05, publish)
    error = published.wait()
    assert error is None, f"Writer failed: {error}"
    single = Waiter("the rest, published one by one")
    left = {"n": len(bodies) - 51}

    def on_each(conn, data):
        if isinstance(data, Exception):
            single.done(data)
            return
        left["n"] -= 1
        if left["n"] == 0:
            single.done()

    for b in bodies[51:]:
        writer.pub("suite", b, callback=on_each)
    error = single.wait()
    assert error is None, f"Writer failed: {error}"
    got = read_all("suite", 100, lookupd_http_addresses=[f"http://127.0.0.1:{d.lookup_http}"],
                   lookupd_poll_interval=1, lookupd_poll_jitter=0.01, auth_secret=SECRET,
                   deflate=True, deflate_level=6, **TLS_VERIFY)
    assert sorted(got) == sorted(bodies), got
    server.stop()


SCENARIOS = [
    scenario_tls_snappy,
    scenario_tls_deflate,
    scenario_lookupd,
    scenario_auth,
    scenario_go_nsq_command_line,
]

if __name__ == "__main__":
    for scenario in SCENARIOS:
        daemons = Daemons()
        try:
            scenario(daemons)
        finally:
            daemons.stop()
        print("ok", scenario.__name__[len("scenario_"):], flush=True)
