"""pynsq Reader connected straight to one broker.

Usage: direct_reader.py NSQD_TCP TOPIC CHANNEL EXPECTED

Consumes TOPIC/CHANNEL until EXPECTED messages arrived (each FINed); prints every body on its own
line (UTF-8), then "received N" and exits 0, or exits 1 after 60 s.
"""
import sys

import nsq
from tornado import ioloop

NSQD, TOPIC, CHANNEL, EXPECTED = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
bodies = []
loop = ioloop.IOLoop.current()


def done(ok):
    for body in bodies:
        print(body.decode("utf-8", "replace"))
    print(f"received {len(bodies)}", "OK" if ok else "TIMEOUT")
    loop.stop()
    sys.exit(0 if ok else 1)


def handler(message):
    bodies.append(message.body)
    if len(bodies) >= EXPECTED:
        loop.add_callback(done, True)
    return True


reader = nsq.Reader(topic=TOPIC, channel=CHANNEL, message_handler=handler,
                    nsqd_tcp_addresses=[NSQD], max_in_flight=50)
loop.call_later(60, done, False)
nsq.run()
