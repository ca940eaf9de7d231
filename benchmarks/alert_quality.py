"""Alert quality on a held-out simulated cohort, through the production monitor dataflow.

    .venv/bin/python -m benchmarks.alert_quality [--seed 11] [--compare-seed 42]
        [--patients 500] [--messages 20000] [--fault-rate 0.02] [--home-share 0.1] [--quick]

The demo's cohort (``infra/local/demo.sh``: 500 patients, 20,000 messages, 2 % faulty, a tenth
of the patients in the home cohort) simulated with a seed the risk model was not trained on
(``--seed``; refused if it is the training seed that the model's metadata names), and with the
demo's own seed for comparison (``--compare-seed``, 0 to skip). For each seed:

1. the simulator's messages and ground truth (``lib.sim.stream``: the records
   ``BPWATCH_SIM_TRUTH`` holds);
2. ``dataflows.monitor.build`` with ``recording_io`` (``TestingSource`` in, every output
   recorded behind the production steps), as ``tests/dataflow`` run it (no Kafka, no
   Elasticsearch), the production model and the
   production alert policy (``build``'s default from the settings);
3. the ``bp-alerts`` documents scored by :mod:`lib.tools.alert_quality`;
4. the policy trade-off: :class:`lib.monitor.engine.Monitor` (the same per-patient steps,
   without Bytewax) gives each patient's assessments once, and the episode tracker replays
   them for each knob value. The replay of the base policy must reproduce the dataflow's
   reading alerts, id for id (printed; a mismatch fails the benchmark);
5. the same assessments replayed with the policy before tiers (every episode urgent, no
   confirmation: ``BPWATCH_ALERT_URGENT=all BPWATCH_ALERT_CONFIRM_READINGS=1``), whose urgent
   burden the production policy's is compared with (target: at most a fifth).

Monitor settings come from the environment as the monitor reads them (``BPWATCH_RULESET``,
``BPWATCH_ALERT_MIN_SEVERITY``, ``BPWATCH_MODEL_PATH``, ...); the simulator's from the flags
(``BPWATCH_SIM_START`` too: unset, time 0 is the simulator's fixed default, so no patient is
within the wall-clock ``no_data`` lookback and the run is deterministic).
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from bytewax.connectors.kafka import KafkaSourceMessage
from bytewax.testing import TestingSource, run_main

from benchmarks.common import Option, Row, command
from lib.domain import SEVERITIES, TIER_KEYS, Assessment
from lib.monitor.alerts import HOME_CONDITION, NO_DATA_CONDITION, AlertPolicy, NoDataRule
from lib.monitor.engine import Monitor
from lib.monitor.risk import RiskModel
from lib.settings import Settings
from lib.sim import stream
from lib.tools import alert_quality as aq

TOPIC = "bench.bp.observations"
BATCH = 1000  # KafkaSource's default batch size
DEMO_SEED = 42  # infra/local/demo.sh
# Seeds 42, 3 and 7 were looked at while the tiered policy was tuned (lib/monitor/alerts.py,
# "Confirmation"); 11 was run once, after the choice: the held-out seed.
HELD_OUT_SEED = 11

OPTIONS = (
    Option("--seed", HELD_OUT_SEED, HELD_OUT_SEED),
    Option("--compare-seed", DEMO_SEED, DEMO_SEED),
    Option("--patients", 500, 60),
    Option("--messages", 20_000, 2_000, dest="n_messages"),
    Option("--fault-rate", 0.02, 0.02),
    Option("--home-share", 0.1, 0.1),
)

# The knobs of the trade-off, one at a time from the base policy (its own value is added).
KNOBS: dict[str, tuple[Any, ...]] = {
    "open_severity": SEVERITIES,
    "risk_threshold": (0.2, 0.5, 0.8, 0.95, 0.99, 1.0),
    "resolve_after": (1, 3, 6, 12),
    "confirm_readings": (1, 2, 3),
    "urgent": (
        frozenset({"hypertensive_crisis", "combined_critical", "systolic_hypotension"}),
        frozenset({"hypertensive_crisis", "combined_critical"}),
        frozenset(
            {"hypertensive_crisis", "combined_critical", "systolic_hypotension", "high_risk"}
        ),
        frozenset(TIER_KEYS),
    ),
}


@dataclass(frozen=True, slots=True)
class Run:
    """One seed's run: the truth, the dataflow's alert documents, each patient's assessments."""

    settings: Settings
    truth: aq.Truth
    alert_docs: list[dict[str, Any]]
    assessments: dict[str, list[Assessment]]
    seconds: float


def base_policy(settings: Settings, model: Any) -> AlertPolicy:
    """The policy ``dataflows.monitor.build`` makes by default (its own function)."""
    from dataflows.monitor import default_alert_policy

    return default_alert_policy(settings, model)


def simulate(settings: Settings) -> tuple[list[KafkaSourceMessage], aq.Truth]:
    """The simulator's messages as the monitor's source reads them, and their ground truth."""
    items: list[KafkaSourceMessage] = []
    records: list[dict[str, Any]] = []
    headers = [("content-type", b"application/fhir+json")]
    for offset, m in enumerate(stream.messages(settings)):
        ms = int(m.emitted_at.timestamp() * 1000)
        items.append(
            KafkaSourceMessage(
                m.key, m.value, topic=TOPIC, headers=headers, partition=0, offset=offset,
                timestamp=(1, ms),
            )
        )  # fmt: skip
        records += (stream.truth_record(m, e) for e in m.expected)
    return items, aq.truth_from_records(records)


def run_dataflow(
    settings: Settings, items: list[KafkaSourceMessage], model: Any
) -> list[dict[str, Any]]:
    """The production monitor dataflow over ``items``: its ``bp-alerts`` documents."""
    from dataflows.monitor import build, recording_io

    io, out = recording_io(TestingSource(items, batch_size=BATCH))
    run_main(build(settings, io=io, model=model))
    return [doc for _action, _id, doc in out.alerts_es]  # type: ignore[misc]


def assessments_of(
    settings: Settings, items: list[KafkaSourceMessage], model: Any
) -> dict[str, list[Assessment]]:
    """Each patient's assessments, in the order the monitor processes them (the engine runs
    the dataflow's per-patient steps; the policy it is given does not change them)."""
    policy = base_policy(settings, model)
    monitor = Monitor(
        model,
        settings.ruleset,
        window_size=settings.window_size,
        idle_expiry_hours=settings.idle_expiry_hours,
        policy=policy,
        no_data=NoDataRule(
            settings.no_data_hours,
            settings.no_data_lookback_days,
            tier=policy.tier_of(NO_DATA_CONDITION),
        ),
        every_home=settings.reading_setting == "home",
    )
    out: dict[str, list[Assessment]] = defaultdict(list)
    for i in range(0, len(items), BATCH):
        for patient, res in monitor.process(items[i : i + BATCH]):
            out[patient] += (a for a in res.outcomes if type(a) is Assessment)
    return dict(out)


def run_seed(settings: Settings, model: Any) -> Run:
    t0 = time.perf_counter()
    items, truth = simulate(settings)
    docs = run_dataflow(settings, items, model)
    assessments = assessments_of(settings, items, model)
    return Run(settings, truth, docs, assessments, time.perf_counter() - t0)


def _reading_ids(events: Sequence[Any]) -> set[str]:
    ids = set()
    for e in events:
        doc = e if isinstance(e, dict) else e.to_doc()
        if doc["condition"] not in (HOME_CONDITION, NO_DATA_CONDITION):
            ids.add(doc["alert_id"])
    return ids


def before_tiers(base: AlertPolicy) -> AlertPolicy:
    """The behaviour before tiers: every episode pages on its first reading."""
    return replace(base, urgent=frozenset(TIER_KEYS), confirm_readings=1, critical_risk=None)


def evaluate_seed(run: Run, model: Any, label: str) -> tuple[aq.Report, aq.Report, str]:
    """The report of one run, that of the policy before tiers, and the printed text."""
    s = run.settings
    report = aq.evaluate(run.truth, run.alert_docs)
    base = base_policy(s, model)
    flow_ids = _reading_ids(run.alert_docs)
    replayed = _reading_ids(aq.replay(run.assessments.values(), base))
    if replayed != flow_ids:
        raise AssertionError(
            f"the offline replay of the base policy gives {len(replayed)} reading alerts, the "
            f"dataflow {len(flow_ids)} ({len(replayed ^ flow_ids)} differ): the policy of "
            "dataflows.monitor.build has changed, update base_policy"
        )
    knobs = {k: v if getattr(base, k) in v else (getattr(base, k), *v) for k, v in KNOBS.items()}
    rows = aq.trade_off(run.truth, run.assessments, base, knobs)
    before = aq.evaluate(run.truth, aq.replay(run.assessments.values(), before_tiers(base)))
    text = "\n".join(
        [
            f"## seed {s.sim_seed} ({label}): {s.sim_patients} patients, {s.sim_count:,} "
            f"messages, fault rate {s.sim_fault_rate:g}, home share {s.sim_home_share:g}, "
            f"rule set {s.ruleset}, alerts from severity {s.alert_min_severity} "
            f"({run.seconds:.1f} s)",
            "",
            aq.format_report(report),
            "",
            f"headline: {aq.headline(report)}",
            f"before tiers (every episode urgent, no confirmation): {aq.headline(before)}",
            "",
            f"policy trade-off: one knob at a time from the production policy (bold); the "
            f"offline replay of that policy reproduces the dataflow's {len(flow_ids)} reading "
            "alert events id for id",
            "",
            aq.format_trade_off(rows),
        ]
    )
    return report, before, text


def measure(
    seed: int = HELD_OUT_SEED,
    compare_seed: int = DEMO_SEED,
    patients: int = 500,
    n_messages: int = 20_000,
    fault_rate: float = 0.02,
    home_share: float = 0.1,
) -> list[Row]:
    """Both seeds' tables, printed; the headline figures as rows (``benchmarks.run``)."""
    settings = Settings.from_env()
    model = RiskModel.load_parameters(settings.model_path)
    trained_on = model.metadata.get("training", {}).get("seed")
    if seed == trained_on:
        raise SystemExit(f"--seed {seed} is the seed the model was trained on: choose another")
    print(
        f"held-out seed {seed} (the model {settings.model_path} was trained on seed {trained_on})"
    )
    rows: list[Row] = []
    seeds = [(seed, "held out")]
    if compare_seed:
        seeds.append((compare_seed, "demo seed, for comparison"))
    for sim_seed, label in seeds:
        s = replace(
            settings,
            sim_seed=sim_seed,
            sim_patients=patients,
            sim_count=n_messages,
            sim_fault_rate=fault_rate,
            sim_home_share=home_share,
        )
        report, before, text = evaluate_seed(run_seed(s, model), model, label)
        print(f"\n{text}\n", flush=True)
        rows += _rows(report, before, sim_seed, held_out=sim_seed == seed)
    return rows


def _rows(report: aq.Report, before: aq.Report, seed: int, *, held_out: bool) -> list[Row]:
    """The headline figures as benchmark rows; the targets apply to the held-out seed."""
    u = report.score(aq.ALL, aq.URGENT)
    tag = f"seed {seed}" + (" held out" if held_out else "")
    note = f"{u.opened} urgent episodes, {u.covered}/{u.events} true events covered"

    def row(metric: str, value: float | None, unit: str, target: str, met: bool | None) -> Row:
        shown: float | str = "-" if value is None else round(value, 3)
        if not held_out or not target:
            target, met = "", None
        elif value is None:
            met = False
        return Row("alert quality", f"{metric} ({tag})", shown, unit, target, met, note)

    precision, recall, median = u.precision, u.recall, u.median_readings
    old = before.score(aq.ALL, aq.URGENT).burden
    ratio = u.burden / old if u.burden is not None and old else None
    return [
        row("urgent precision", precision, "", ">= 0.5", (precision or 0) >= 0.5),
        row("urgent recall", recall, "", ">= 0.95", (recall or 0) >= 0.95),
        row("median time to alert", median, "readings", "<= 1", (median or 0) <= 1),
        row("urgent burden", u.burden, "per 100 patient-days", "", None),
        row(
            "urgent burden / before tiers (same run)",
            ratio,
            "x",
            "<= 0.2",
            ratio is not None and ratio <= 0.2,
        ),
    ]


def main(argv: list[str] | None = None) -> list[Row]:
    return command(__doc__, measure, argv, *OPTIONS)


if __name__ == "__main__":
    main()
