"""Faust's aiokafka transport with a configurable consumer fetch wait.

Faust hard-codes `fetch_max_wait_ms=1500` for its consumer. Apache Kafka answers a
parked fetch as soon as data arrives, so there the value only bounds idle polling;
the embedded broker we develop and test on answers at the end of the wait, which
added ~750 ms to every hop of the choreography. The wait is now a setting
(PAYMENTS_CONSUMER_FETCH_WAIT_MS), registered as the `payments-kafka://` scheme.
"""

from __future__ import annotations

import os
from typing import Any

from faust.transport.drivers import aiokafka as faust_aiokafka

FETCH_WAIT_ENV = "PAYMENTS_CONSUMER_FETCH_WAIT_MS"
FETCH_WAIT_DEFAULT_MS = 10


class ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = int(os.environ.get(FETCH_WAIT_ENV, FETCH_WAIT_DEFAULT_MS))
        return consumer


class Consumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> ConsumerThread:
        return ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class Transport(faust_aiokafka.Transport):
    Consumer = Consumer
