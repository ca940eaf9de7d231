"""The simulator: synthetic patients and the FHIR stream they send.

    cohort       patients, profiles and blood-pressure trajectories (ground truth included)
    fhir_writer  a simulated reading -> a FHIR R4 Observation or Bundle (JSON bytes)
    stream       the whole simulated stream: readings in time order plus injected faults,
                 each message with its expected fate

``dataflows/simulate.py`` sends the stream to Kafka or a file.
"""
