"""Micro-benchmark of ``lib.monitor.fhir.parse`` and ``lib.monitor.rules.assess`` (µs per message).

    .venv/bin/python -m benchmarks.bench_parse [--n 500000] [--short]

A benchmark, not a test. Messages are built here (a typical simulator-shaped Observation, a kPa
variant, a 10-entry Bundle, and a dead letter), encoded once with orjson, then parsed in a tight
loop. Each figure is the best of 5 loops in process CPU time, so other load on the machine
inflates it little. ``json.loads`` / ``orjson.loads`` alone are shown for the decode cost of the
general path, the msgspec decode into the common-shape structs for that of the fast path (the
typical and kPa Observations take the fast path; the Bundle and the dead letter the general
path).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable
from typing import Any

import orjson

from lib.domain import Reading
from lib.monitor import fhir, rules
from lib.monitor.fhir import fastpath


def observation(i: int, *, kpa: bool = False) -> dict:
    unit = {"unit": "kPa", "system": "http://unitsofmeasure.org", "code": "kPa"}
    mmhg = {"unit": "mmHg", "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}
    sys_v, dia_v = (16.9, 10.4) if kpa else (127 + i % 30, 78 + i % 15)
    return {
        "resourceType": "Observation",
        "id": f"obs-{i:08d}",
        "meta": {
            "versionId": "1",
            "profile": ["http://hl7.org/fhir/StructureDefinition/bp"],
        },
        "identifier": [{"system": "urn:bpwatch:obs", "value": f"obs-{i:08d}"}],
        "status": "final",
        "category": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                        "code": "vital-signs",
                        "display": "Vital Signs",
                    }
                ]
            }
        ],
        "code": {
            "coding": [
                {
                    "system": "http://loinc.org",
                    "code": "85354-9",
                    "display": "Blood pressure panel with all children optional",
                }
            ],
            "text": "Blood pressure",
        },
        "subject": {"reference": f"Patient/p-{i % 500:05d}", "display": "Jane Example"},
        "effectiveDateTime": f"2025-03-{1 + i % 28:02d}T{i % 24:02d}:{i % 60:02d}:00+01:00",
        "component": [
            {
                "code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
                "valueQuantity": {"value": sys_v, **(unit if kpa else mmhg)},
            },
            {
                "code": {"coding": [{"system": "http://loinc.org", "code": "8462-4"}]},
                "valueQuantity": {"value": dia_v, **(unit if kpa else mmhg)},
            },
        ],
    }


def bench(
    label: str, messages: list, fn: Callable[[Any], object], n: int, repeats: int = 5
) -> float:
    """Best of ``repeats`` loops of ``n`` calls, in process CPU time (resists other load)."""
    count = len(messages)
    for m in messages[:1000]:  # warm up
        fn(m)
    best = float("inf")
    for _ in range(repeats):
        start = time.process_time()
        for i in range(n):
            fn(messages[i % count])
        best = min(best, time.process_time() - start)
    per_msg = best / n * 1e6
    print(f"{label:<36} {per_msg:8.2f} µs/msg  {1e6 / per_msg:>12,.0f} msg/s")
    return per_msg


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=500_000, help="messages per case (5 timed loops)")
    parser.add_argument("--short", action="store_true", help="10k messages per case (CI)")
    args = parser.parse_args()
    n = 10_000 if args.short else args.n // 5

    typical = [orjson.dumps(observation(i)) for i in range(1000)]
    kpa = [orjson.dumps(observation(i, kpa=True)) for i in range(1000)]
    bundles = [
        orjson.dumps(
            {
                "resourceType": "Bundle",
                "type": "collection",
                "entry": [{"resource": observation(i * 10 + j)} for j in range(10)],
            }
        )
        for i in range(100)
    ]
    bad = []
    for i in range(1000):
        obs = observation(i)
        obs["component"] = obs["component"][:1]
        bad.append(orjson.dumps(obs))

    print(f"python {platform.python_version()} on {platform.machine()}, {len(typical[0])} B/msg")
    bench("json.loads only (reference)", typical, json.loads, n)
    bench("orjson.loads only (reference)", typical, orjson.loads, n)
    bench("msgspec decode only (fast path)", typical, fastpath._decode_common, n)
    bench("parse: typical Observation", typical, fhir.parse, n)
    bench("parse: kPa Observation", kpa, fhir.parse, n)
    per_bundle = bench("parse: Bundle of 10", bundles, fhir.parse, max(n // 10, 1000))
    print(f"{'  = per entry':<34} {per_bundle / 10:8.2f} µs/obs")
    bench("parse: dead letter (no diastolic)", bad, fhir.parse, n)
    parsed = [fhir.parse(m)[0] for m in typical]
    readings = [r for r in parsed if isinstance(r, Reading)]
    bench("rules.assess (no window)", readings, lambda r: rules.assess(r, None, "aha2017"), n)


if __name__ == "__main__":
    main()
