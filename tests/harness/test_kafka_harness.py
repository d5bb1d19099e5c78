"""The Kafka part of the harness works: a real broker takes an idempotent producer's messages and
gives them back in order with keys and headers, and loses nothing across a restart."""

from confluent_kafka import Producer


def produce(kafka, topic, start, count, producer=None):
    """Produces messages start..start+count-1 with acks=all and idempotence; returns the producer
    after every delivery report has come back without error."""
    p = producer or Producer(kafka.config(**{"acks": "all", "enable.idempotence": True,
                                             "linger.ms": 5}))
    errors = []

    def report(err, msg):
        if err is not None:
            errors.append((msg.key(), err))

    for i in range(start, start + count):
        while True:
            try:
                p.produce(topic, key=b"k%d" % i, value=b"value %d" % i,
                          headers=[("seq", str(i).encode()), ("src", b"harness")], on_delivery=report)
                break
            except BufferError:
                p.poll(0.1)
        p.poll(0)
    assert p.flush(30) == 0, "messages still queued after 30 s"
    assert errors == []
    return p


def check(records, n):
    assert len(records) == n
    for i, r in enumerate(records):
        assert (r.key, r.value, r.partition, r.offset) == (b"k%d" % i, b"value %d" % i, 0, i)
        assert r.headers == [("seq", str(i).encode()), ("src", b"harness")]
        assert r.timestamp > 0


def test_produce_consume_1000(kafka):
    topic = kafka.create_topic()
    produce(kafka, topic, 0, 1000)
    check(kafka.consume_all(topic, idle_ms=500), 1000)


def test_restart_loses_nothing(kafka):
    topic = kafka.create_topic()
    p = produce(kafka, topic, 0, 500)
    kafka.restart()
    # the same producer reconnects to the same bootstrap address and keeps its idempotent session
    produce(kafka, topic, 500, 500, producer=p)
    check(kafka.consume_all(topic, idle_ms=500), 1000)


def test_auto_created_topic(kafka):
    # auto.create.topics.enable=true: a relay's first message to a new topic is not refused
    topic = "bw-auto-%d" % id(kafka)
    produce(kafka, topic, 0, 10)
    check(kafka.consume_all(topic, idle_ms=300), 10)
