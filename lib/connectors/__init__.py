"""I/O only: the sources and sinks the dataflows attach at their edges.

kafka         the confirmed Kafka producer (simulator output), credentials preflight
kafka_once    the exactly-once Kafka sink (dead letters, alerts): deterministic ids
elastic       the Elasticsearch client factory and the idempotent bulk sink
normal_files  the JSON Lines sink for normal readings (exactly once under recovery)
"""
