"""The monitor's core steps, pure and typed: no I/O except loading the trained model.

Read in the order a message travels:

    fhir       FHIR R4 JSON -> Reading | Retraction | Ignored | DeadLetter
    shards     a batch of messages -> outcomes grouped by patient id
    patient    one patient's whole state, keyed by patient id: window (window.py) -> rules.py
               -> risk.py -> alert episodes (alerts.py) -> home series (home.py) -> no_data
    state      what a batch makes (Results), the outcome counters, one reading's risk
    alerts     alert episodes per patient (opening, escalation, resolution)
    wakeups    when to wake a patient on the wall clock (no_data check, reclaim)
    documents  the items each sink receives (Elasticsearch, files, Kafka)
    engine     the same chain without Bytewax (benchmarks, embedded runs)

``dataflows/monitor.py`` wires these into Bytewax steps.
"""
