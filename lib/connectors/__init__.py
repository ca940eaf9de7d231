"""I/O only: the sources and sinks the dataflows attach at their edges.

kafka_produce the one produce-and-confirm path every Kafka output uses
kafka         the confirmed Kafka sink (simulator output), produce_all, credentials preflight
kafka_once    the exactly-once Kafka sink (dead letters, alerts): deterministic ids
elastic/      Elasticsearch: the bulk protocol, the client factory (sinks and tools), the
              background writer, the idempotent sink's step, and its testing sink
normal_files  the JSON Lines sink for normal readings (exactly once under recovery)
shared        one client or writer per sink and process, shared by the workers
"""
