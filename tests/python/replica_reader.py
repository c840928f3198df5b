"""pynsq Reader that finds brokers through lookupd and prints every message it gets.

Usage: replica_reader.py LOOKUPD_HTTP TOPIC CHANNEL

Consumes TOPIC/CHANNEL from every broker lookupd lists (polling lookupd every second) and prints
each message body on a line of its own as it arrives, FINing it; runs until it is killed.
"""
import sys

import nsq

LOOKUPD, TOPIC, CHANNEL = sys.argv[1], sys.argv[2], sys.argv[3]


def handler(message):
    sys.stdout.write(message.body.decode() + "\n")
    sys.stdout.flush()
    return True


reader = nsq.Reader(topic=TOPIC, channel=CHANNEL, message_handler=handler,
                    lookupd_http_addresses=[f"http://{LOOKUPD}"], lookupd_poll_interval=1,
                    max_in_flight=100)
nsq.run()
