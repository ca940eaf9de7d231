"""I/O only: the sources and sinks the dataflows attach at their edges.

kafka/        Kafka: the monitor's source, the credentials preflight, the one
              produce-and-confirm path, the confirmed sink and produce_all, and the sink
              idempotent by id (dead letters, alerts)
elastic/      Elasticsearch: the bulk protocol, the client factory (sinks and tools), the
              background writer, the idempotent sink's step, and its testing sink
normal_files  the JSON Lines sink for normal readings (exactly once under recovery)
shared        one client or writer per sink and process, shared by the workers
kafka_once, kafka_produce  earlier import paths of kafka.idempotent and kafka.producer
"""
