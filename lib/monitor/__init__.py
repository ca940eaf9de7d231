"""The monitor's core steps, pure and typed: no I/O except loading the trained model.

Read in the order a message travels:

    fhir       FHIR R4 JSON -> Reading | Retraction | Ignored | DeadLetter
    shards     a batch of messages -> outcomes grouped by patient shard
    state      per-patient windows (window.py) -> rules.py -> risk.py, per shard
    alerts     alert episodes per patient (opening, escalation, resolution)
    documents  the items each sink receives (Elasticsearch, files, Kafka)
    engine     the same chain without Bytewax (benchmarks, embedded runs)

``dataflows/monitor.py`` wires these into Bytewax steps.
"""
