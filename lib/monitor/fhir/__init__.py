"""FHIR R4 blood-pressure Observations -> outcomes (the monitor's hot path).

``parse(value, key, source, headers)`` turns one Kafka message into a list of outcomes
(:mod:`lib.domain`): ``Reading`` | ``Retraction`` | ``Ignored`` | ``Average`` | ``Skipped`` |
``DeadLetter``. It never raises, never returns an empty list, gives **at most one dead letter
per message**, and does no I/O, no logging of payloads and no wall-clock work.
``docs/fhir-input.md`` is the specification: what is accepted, ids, patient keys, versions,
values and units, and the dead-letter reasons.

The package, one role per module; both parsers take every field rule from ``fields``:

    general    ``parse``: the general path (orjson), a lone resource or a Bundle's entries
    fastpath   the common shape of a lone BP Observation, decoded with msgspec (or declined)
    resources  one resource of the general path: kind, head, Reading / Average / ...
    pairs      systolic and diastolic sent as separate Observations, paired
    fields     limits, codes, units, ids, patient keys, versions, values, times, dead letters
"""

from lib.monitor.fhir.fields import (
    AVERAGE_BP_CODE,
    AVG_DIASTOLIC_CODE,
    AVG_SYSTOLIC_CODE,
    BODY_POSITION_URL,
    BP_PANEL_CODE,
    DIASTOLIC_BOUNDS,
    DIASTOLIC_CODE,
    IGNORED_STATUSES,
    KPA_TO_MMHG,
    LEGACY_BP_PANEL_CODE,
    LOINC_OID,
    LOINC_SYSTEM,
    MAX_BUNDLE_ENTRIES,
    MAX_DETAIL_ENTRIES,
    MAX_ID_LENGTH,
    MAX_MESSAGE_BYTES,
    MEASUREMENT_SETTING_URL,
    READING_STATUSES,
    REASONS,
    RETRACTION_STATUS,
    SETTINGS_BY_SNOMED,
    SYSTOLIC_BOUNDS,
    SYSTOLIC_CODE,
)
from lib.monitor.fhir.general import parse
from lib.monitor.fhir.pairs import pair_id

__all__ = [
    "AVERAGE_BP_CODE",
    "AVG_DIASTOLIC_CODE",
    "AVG_SYSTOLIC_CODE",
    "BODY_POSITION_URL",
    "BP_PANEL_CODE",
    "DIASTOLIC_BOUNDS",
    "DIASTOLIC_CODE",
    "IGNORED_STATUSES",
    "KPA_TO_MMHG",
    "LEGACY_BP_PANEL_CODE",
    "LOINC_OID",
    "LOINC_SYSTEM",
    "MAX_BUNDLE_ENTRIES",
    "MAX_DETAIL_ENTRIES",
    "MAX_ID_LENGTH",
    "MAX_MESSAGE_BYTES",
    "MEASUREMENT_SETTING_URL",
    "READING_STATUSES",
    "REASONS",
    "RETRACTION_STATUS",
    "SETTINGS_BY_SNOMED",
    "SYSTOLIC_BOUNDS",
    "SYSTOLIC_CODE",
    "pair_id",
    "parse",
]
