"""Poison and ordering: a patient's clean stream, perturbed without changing its meaning.

:func:`perturb` takes each patient's clean, in-order messages (final readings) and delivers them

* out of order (each reading displaced by up to ``max_shift`` places within its patient);
* duplicated (the very same bytes again, later: ``dup_spread`` readings after the original);
* interleaved with *bogus* readings (their own ids) that are withdrawn by an
  ``entered-in-error`` version, the retraction arriving after the reading, or before it (the
  late original must then never be scored), with duplicates of either.

Bogus readings that may be scored before their retraction have crisis values (an anomaly under
every rule set: their document must be deleted); bogus readings with normal values always come
after their retraction (so they must never reach the append-only normal files). The meaning of
the perturbed stream is therefore the clean stream's: every clean reading once, no bogus one.
Deterministic for a seed.
"""

from __future__ import annotations

import heapq
import random
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, replace
from itertools import islice

from lib.domain import Reading
from lib.sim import cohort
from lib.sim import fhir_writer as fhir_obs
from lib.sim import stream as sim
from lib.sim.stream import SimMessage

Record = tuple[bytes | None, bytes, list[tuple[str, bytes]]]


@dataclass
class Perturbed:
    clean: list[Record]
    records: list[Record]
    bogus_ids: set[str]
    kinds: Counter[str]


def _fhir(patient: cohort.Patient, r: Reading, **kw: object) -> bytes:
    return fhir_obs.encode(
        fhir_obs.to_fhir(r, patient.name, utc_offset_min=patient.utc_offset_min, **kw)
    )


def _patient_stream(
    patient: cohort.Patient,
    msgs: list[SimMessage],
    rng: random.Random,
    max_shift: int,
    dup_spread: tuple[int, int],
    kinds: Counter[str],
) -> tuple[list[tuple[float, Record]], set[str]]:
    items: list[tuple[float, Record]] = []  # (sort position, record)
    bogus: set[str] = set()
    for i, m in enumerate(msgs):
        rec = m.kafka_record()
        kinds["reading"] += 1
        items.append((i + rng.uniform(0, max_shift), rec))  # displaced by up to max_shift
        if rng.random() < 0.2:
            kinds["duplicate"] += 1
            items.append((i + rng.uniform(*dup_spread), rec))
        if rng.random() < 0.12:
            (exp,) = m.expected
            assert exp.reading is not None
            crisis = rng.random() < 0.6
            r = replace(
                exp.reading,
                observation_id=f"{exp.reading.observation_id}-bogus",
                systolic=205.0 if crisis else 118.0,
                diastolic=125.0 if crisis else 76.0,
                version="1",
            )
            bogus.add(r.observation_id)
            reading = (patient.patient_id.encode(), _fhir(patient, r), [])
            withdrawn = replace(r, version="2")
            retraction = (
                patient.patient_id.encode(),
                _fhir(patient, withdrawn, status="entered-in-error", issued=r.effective_at),
                [],
            )
            at = i + rng.uniform(0, max_shift)
            if crisis and rng.random() < 0.5:
                kinds["bogus_then_retraction"] += 1
                order = [(at, reading), (at + rng.uniform(0.01, max_shift), retraction)]
            else:
                kinds["retraction_then_bogus"] += 1
                order = [(at, retraction), (at + rng.uniform(0.01, max_shift), reading)]
            if rng.random() < 0.3:  # the whole pair resent
                kinds["resent_pair"] += 1
                order += [(t + 0.5, rec2) for t, rec2 in order]
            items += order
    # position -> event time (monotone), so that patients merge by time and keep their order
    times = [m.emitted_at.timestamp() for m in msgs]

    def at_time(pos: float) -> float:
        i = int(pos)
        if i >= len(times) - 1:
            return times[-1] + (pos - (len(times) - 1))
        return times[i] + (pos - i) * (times[i + 1] - times[i])

    timed = [(at_time(pos), rec) for pos, rec in items]
    timed.sort(key=lambda x: x[0])
    return timed, bogus


def perturb(
    patients: Iterable[cohort.Patient],
    seed: int,
    per_patient: int,
    *,
    max_shift: int = 3,
    dup_spread: tuple[int, int] = (0, 8),
) -> Perturbed:
    """Clean and perturbed streams (patients merged by event time, each in its own order).

    A duplicate arrives ``dup_spread`` readings (uniform) after its original: by default within
    the patient window (12), where the monitor promises to recognise it; a spread beyond the
    window exercises redeliveries that come much later.
    """
    rng = random.Random(seed)
    kinds: Counter[str] = Counter()
    clean_streams: list[list[tuple[float, Record]]] = []
    bad_streams: list[list[tuple[float, Record]]] = []
    bogus: set[str] = set()
    for p in patients:
        msgs = list(islice(sim.patient_messages(p, seed, fault_rate=0.0), per_patient))
        clean_streams.append([(m.emitted_at.timestamp(), m.kafka_record()) for m in msgs])
        stream, b = _patient_stream(p, msgs, rng, max_shift, dup_spread, kinds)
        bad_streams.append(stream)
        bogus |= b
    return Perturbed(_interleave(clean_streams), _interleave(bad_streams), bogus, kinds)


def _interleave(streams: list[list[tuple[float, Record]]]) -> list[Record]:
    """Merge the patients' streams by event time (stable: a patient's own order is kept)."""
    return [rec for _, rec in heapq.merge(*streams, key=lambda x: x[0])]
