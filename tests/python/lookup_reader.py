"""pynsq Reader that finds brokers through lookupd.

Usage: lookup_reader.py LOOKUPD_HTTP TOPIC CHANNEL EXPECTED

Consumes TOPIC/CHANNEL from every broker lookupd lists until EXPECTED distinct messages arrived;
prints "received N distinct" and exits 0, or exits 1 after 60 s.
"""
import sys

import nsq
from tornado import ioloop

LOOKUPD, TOPIC, CHANNEL, EXPECTED = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
seen = set()
loop = ioloop.IOLoop.current()


def done(ok):
    print(f"received {len(seen)} distinct", "OK" if ok else "TIMEOUT")
    loop.stop()
    sys.exit(0 if ok else 1)


def handler(message):
    seen.add(message.body)
    if len(seen) >= EXPECTED:
        loop.add_callback(done, True)
    return True


reader = nsq.Reader(topic=TOPIC, channel=CHANNEL, message_handler=handler,
                    lookupd_http_addresses=[f"http://{LOOKUPD}"], lookupd_poll_interval=1,
                    max_in_flight=50)
loop.call_later(60, done, False)
nsq.run()
