from tests.kafka_support import kafka_broker  # noqa: F401 - a real Kafka broker per test
from tests.redis_server import redis_server  # noqa: F401 - a real redis-server per test
