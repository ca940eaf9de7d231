"""One typed, frozen settings object built from the environment (see docs/contract.md).

``Settings.from_env()`` validates every variable; an invalid value raises
:class:`lib.errors.ConfigError` whose message names the variable and the fix. The entry
points turn that into one line on stderr and exit code 2. Secrets never appear in ``repr``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from lib.domain import DEFAULT_URGENT, TIER_KEYS
from lib.errors import ConfigError
from lib.monitor.rules import DEFAULT_RULESET, RULESETS

_SECRET = ("password", "api_key", "sasl.password", "ssl.key.password")


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    low = raw.strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name}={raw!r} is not a boolean: use true or false")


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 0) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(
            f"{name}={raw!r} is not a whole number: set e.g. {name}={default}"
        ) from None
    if value < minimum:
        raise ConfigError(f"{name}={value} is below {minimum}: set {name} to {minimum} or more")
    return value


def _float(
    env: Mapping[str, str], name: str, default: float, lo: float = 0.0, hi: float | None = None
) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number: set e.g. {name}={default}") from None
    if value < lo or (hi is not None and value > hi):
        bound = f"between {lo} and {hi}" if hi is not None else f"at least {lo}"
        raise ConfigError(f"{name}={value} is out of range: set {name} {bound}")
    return value


def _sim_speedup(env: Mapping[str, str], default: float) -> float:
    """``BPWATCH_SIM_SPEEDUP``: a realistic cadence, exclusive with a fixed message rate."""
    speedup = _float(env, "BPWATCH_SIM_SPEEDUP", default)
    if speedup > 0 and _float(env, "BPWATCH_SIM_RATE", 0.0) > 0:
        raise ConfigError(
            "BPWATCH_SIM_SPEEDUP and BPWATCH_SIM_RATE are both set: pace by event time "
            "(BPWATCH_SIM_SPEEDUP) or by messages per second (BPWATCH_SIM_RATE), unset the other"
        )
    return speedup


def _choice(env: Mapping[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    value = (env.get(name) or default).strip().lower()
    if value not in choices:
        raise ConfigError(f"{name}={value!r} is unknown: use one of {', '.join(choices)}")
    return value


def _urgent(env: Mapping[str, str]) -> tuple[str, ...]:
    """``BPWATCH_ALERT_URGENT``: a comma-separated list of TIER_KEYS, ``all`` or ``none``."""
    name = "BPWATCH_ALERT_URGENT"
    raw = (env.get(name) or "").strip().lower()
    if not raw:
        return DEFAULT_URGENT
    if raw == "all":
        return TIER_KEYS
    if raw == "none":
        return ()
    keys = tuple(dict.fromkeys(k.strip() for k in raw.split(",") if k.strip()))
    unknown = [k for k in keys if k not in TIER_KEYS]
    if unknown:
        raise ConfigError(
            f"{name} names {', '.join(unknown)}: use all, none or a comma-separated list of "
            f"{', '.join(TIER_KEYS)}"
        )
    return keys


def _datetime(env: Mapping[str, str], name: str) -> datetime | None:
    raw = (env.get(name) or "").strip()
    if not raw:
        return None
    try:
        value = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        value = None
    if value is None or value.tzinfo is None:
        raise ConfigError(
            f"{name}={raw!r} is not an ISO 8601 time with a UTC offset: "
            f"set e.g. {name}=2025-03-03T00:00:00Z"
        )
    return value.astimezone(UTC)


def _kafka_config(env: Mapping[str, str]) -> dict[str, Any]:
    name = "BPWATCH_KAFKA_CONFIG"
    raw = env.get(name, "").strip()
    if not raw:
        return {}
    if raw.startswith("@"):
        path = Path(raw[1:])
        try:
            raw = path.read_text()
        except OSError as exc:
            raise ConfigError(
                f"{name} points to {path}, which cannot be read ({exc.strerror}): "
                "fix the path after '@'"
            ) from None
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ConfigError(
            f"{name} is not valid JSON: give a JSON object such as "
            '{"security.protocol":"SASL_PLAINTEXT"} or @path/to/file.json'
        ) from None
    if not isinstance(value, dict):
        raise ConfigError(f"{name} must be a JSON object of librdkafka settings")
    return value


@dataclass(frozen=True, slots=True)
class Settings:
    kafka_brokers: str = "127.0.0.1:9092"
    kafka_config: dict[str, Any] = field(default_factory=dict)
    kafka_tail: bool = True
    kafka_partitions: int = 6
    es_url: str = "http://127.0.0.1:9200"
    es_api_key: str | None = None
    es_username: str | None = None
    es_password: str | None = None
    es_ca_certs: str | None = None
    normal_dir: Path = Path("data/normal_cases")
    model_path: Path = Path("models/bp_risk.joblib")
    ruleset: str = DEFAULT_RULESET  # a name in lib.monitor.rules.RULESETS
    namespace: str = ""
    window_size: int = 12
    idle_expiry_hours: float = 72.0
    es_batch_size: int = 500
    alert_min_severity: str = "high"  # an alert episode opens at this severity or above
    reading_setting: str = "as_sent"  # "home": every reading is a home measurement
    no_data_hours: float = 48.0  # wall-clock silence that opens a no_data episode
    no_data_lookback_days: float = 7.0  # patients whose last reading is older are not tracked
    # what the normal-case sink does with existing files when there is no recovery snapshot
    normal_on_fresh_start: str = "refuse"  # refuse | replace | append
    normal_retention_days: float = 0.0  # the sink deletes day folders older; 0: keeps all
    topic_retention_days: float = 7.0  # retention.ms of the observations and alert topics
    dlq_retention_days: float = 30.0  # retention.ms of the dead-letter topic
    # ILM: monthly indices are deleted this long after their month (0: kept)
    anomalies_retention_days: float = 0.0
    alerts_retention_days: float = 0.0
    home_averages_retention_days: float = 0.0
    adherence_retention_days: float = 0.0
    alert_reminder_hours: float = 0.0  # a reminder event per open episode; 0: none
    alert_urgent: tuple[str, ...] = DEFAULT_URGENT  # episode kinds that page (the rest: review)
    alert_confirm_readings: int = 2  # consecutive readings that confirm an urgent page
    alert_critical_risk: float = 0.5  # a crisis at this risk score is combined critical
    ack_min_severity: str = "critical"  # opened/escalated at this severity need an ack
    ack_deadline_minutes: float = 15.0  # ... within this much wall-clock time, else overdue
    ack_settle_seconds: float = 900.0  # no overdue this soon after the monitor (re)starts
    adherence_device_only: bool = False  # only readings with a device count (bp-adherence)
    log_level: str = "INFO"
    sim_patients: int = 200
    sim_rate: float = 0.0
    sim_speedup: float = 0.0  # event time runs this many times the wall clock; 0: as fast
    sim_count: int = 10_000
    sim_seed: int = 42
    sim_fault_rate: float = 0.0
    sim_output: str = "kafka"  # kafka | a file path for JSON Lines
    sim_truth: Path | None = None  # ground truth + expected fates (JSON Lines), when set
    sim_bundle: int = 1  # Observations per message (>1: FHIR Bundles)
    sim_home_share: float = 0.0  # share of the patients in the home-monitoring cohort
    sim_start: datetime | None = None  # simulated time 0 (None: lib.sim.cohort.DEFAULT_START)
    sim_ack_share: float = 0.0  # demo: share of the episodes needing an ack that are acked
    sim_ack_delay_minutes: float = 5.0  # demo: acknowledged_at = the event's time + this
    sim_postpartum_share: float = 0.0  # share of the patients enrolled in a postpartum program
    sim_low_adherence_share: float = 0.0  # share of the patients who send on fewer days

    # -- names (namespaced) -------------------------------------------------------------
    def topic(self, base: str) -> str:
        """``bp.observations`` -> ``NS.bp.observations`` when a namespace is set."""
        return f"{self.namespace}.{base}" if self.namespace else base

    def index(self, base: str) -> str:
        """``bp-anomalies`` -> ``NS-bp-anomalies`` when a namespace is set."""
        return f"{self.namespace}-{base}" if self.namespace else base

    @property
    def observations_topic(self) -> str:
        return self.topic("bp.observations")

    @property
    def dlq_topic(self) -> str:
        return self.topic("bp.observations.dlq")

    @property
    def alerts_topic(self) -> str:
        return self.topic("bp.alerts")

    @property
    def acks_topic(self) -> str:
        return self.topic("bp.alerts.acks")

    @property
    def acks_dlq_topic(self) -> str:
        return self.topic("bp.alerts.acks.dlq")

    @property
    def enrollments_topic(self) -> str:
        return self.topic("bp.enrollments")

    @property
    def enrollments_dlq_topic(self) -> str:
        return self.topic("bp.enrollments.dlq")

    @property
    def adherence_index(self) -> str:
        return self.index("bp-adherence")

    @property
    def episodes_index(self) -> str:
        return self.index("bp-episodes")

    @property
    def anomalies_index(self) -> str:
        return self.index("bp-anomalies")

    @property
    def alerts_index(self) -> str:
        return self.index("bp-alerts")

    @property
    def home_averages_index(self) -> str:
        return self.index("bp-home-averages")

    # -- client configs -----------------------------------------------------------------
    def kafka_client_config(self, **extra: Any) -> dict[str, Any]:
        """librdkafka settings: brokers + BPWATCH_KAFKA_CONFIG passthrough + ``extra``."""
        return {"bootstrap.servers": self.kafka_brokers, **self.kafka_config, **extra}

    def es_client_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"hosts": [self.es_url]}
        if self.es_api_key:
            kwargs["api_key"] = self.es_api_key
        elif self.es_username:
            kwargs["basic_auth"] = (self.es_username, self.es_password or "")
        if self.es_ca_certs:
            kwargs["ca_certs"] = self.es_ca_certs
        return kwargs

    def __repr__(self) -> str:
        parts = []
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in ("es_api_key", "es_password") and value:
                value = "***"
            elif f.name == "kafka_config":
                value = {k: ("***" if k in _SECRET else v) for k, v in value.items()}
            parts.append(f"{f.name}={value!r}")
        return f"Settings({', '.join(parts)})"

    # -- construction -------------------------------------------------------------------
    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        d = DEFAULTS  # every default is written once: in the fields above
        ruleset = env.get("BPWATCH_RULESET", "").strip().lower() or DEFAULT_RULESET
        if ruleset not in RULESETS:
            raise ConfigError(
                f"BPWATCH_RULESET={ruleset!r} is unknown: use one of {', '.join(RULESETS)}"
            )
        namespace = env.get("BPWATCH_NAMESPACE", "").strip()
        if namespace and not all(c.isalnum() or c in "-_" for c in namespace):
            raise ConfigError(
                f"BPWATCH_NAMESPACE={namespace!r} may hold only letters, digits, '-' and '_'"
            )
        if namespace != namespace.lower():
            raise ConfigError(
                "BPWATCH_NAMESPACE must be lower case (Elasticsearch index names are)"
            )
        brokers = env.get("BPWATCH_KAFKA_BROKERS", d.kafka_brokers).strip()
        if not brokers or any(":" not in b for b in brokers.split(",")):
            raise ConfigError(f"BPWATCH_KAFKA_BROKERS={brokers!r} must be host:port[,host:port...]")
        es_url = env.get("BPWATCH_ES_URL", d.es_url).strip().rstrip("/")
        if not es_url.startswith(("http://", "https://")):
            raise ConfigError(f"BPWATCH_ES_URL={es_url!r} must start with http:// or https://")
        ca = env.get("BPWATCH_ES_CA_CERTS") or None
        if ca and not Path(ca).is_file():
            raise ConfigError(f"BPWATCH_ES_CA_CERTS={ca!r} is not a file: give the CA PEM path")
        return cls(
            kafka_brokers=brokers,
            kafka_config=_kafka_config(env),
            kafka_tail=_bool(env, "BPWATCH_KAFKA_TAIL", d.kafka_tail),
            kafka_partitions=_int(env, "BPWATCH_KAFKA_PARTITIONS", d.kafka_partitions, minimum=1),
            es_url=es_url,
            es_api_key=env.get("BPWATCH_ES_API_KEY") or None,
            es_username=env.get("BPWATCH_ES_USERNAME") or None,
            es_password=env.get("BPWATCH_ES_PASSWORD") or None,
            es_ca_certs=ca,
            normal_dir=Path(env.get("BPWATCH_NORMAL_DIR") or d.normal_dir),
            model_path=Path(env.get("BPWATCH_MODEL_PATH") or d.model_path),
            ruleset=ruleset,
            namespace=namespace,
            window_size=_int(env, "BPWATCH_WINDOW_SIZE", d.window_size, minimum=2),
            idle_expiry_hours=_float(
                env, "BPWATCH_IDLE_EXPIRY_HOURS", d.idle_expiry_hours, lo=0.01
            ),
            es_batch_size=_int(env, "BPWATCH_ES_BATCH_SIZE", d.es_batch_size, minimum=1),
            alert_min_severity=_choice(
                env,
                "BPWATCH_ALERT_MIN_SEVERITY",
                d.alert_min_severity,
                ("low", "moderate", "high", "critical"),
            ),
            reading_setting=_choice(
                env, "BPWATCH_READING_SETTING", d.reading_setting, ("as_sent", "home")
            ),
            no_data_hours=_float(env, "BPWATCH_NO_DATA_HOURS", d.no_data_hours, lo=0.01),
            no_data_lookback_days=_float(
                env, "BPWATCH_NO_DATA_LOOKBACK_DAYS", d.no_data_lookback_days, lo=0.01
            ),
            normal_on_fresh_start=_choice(
                env,
                "BPWATCH_NORMAL_ON_FRESH_START",
                d.normal_on_fresh_start,
                ("refuse", "replace", "append"),
            ),
            normal_retention_days=_float(
                env, "BPWATCH_NORMAL_RETENTION_DAYS", d.normal_retention_days
            ),
            topic_retention_days=_float(
                env, "BPWATCH_TOPIC_RETENTION_DAYS", d.topic_retention_days, lo=0.01
            ),
            dlq_retention_days=_float(
                env, "BPWATCH_DLQ_RETENTION_DAYS", d.dlq_retention_days, lo=0.01
            ),
            alert_reminder_hours=_float(
                env, "BPWATCH_ALERT_REMINDER_HOURS", d.alert_reminder_hours
            ),
            alert_urgent=_urgent(env),
            alert_critical_risk=_float(
                env, "BPWATCH_ALERT_CRITICAL_RISK", d.alert_critical_risk, lo=0.0, hi=1.0
            ),
            alert_confirm_readings=_int(
                env, "BPWATCH_ALERT_CONFIRM_READINGS", d.alert_confirm_readings, minimum=1
            ),
            ack_min_severity=_choice(
                env,
                "BPWATCH_ACK_MIN_SEVERITY",
                d.ack_min_severity,
                ("low", "moderate", "high", "critical"),
            ),
            ack_deadline_minutes=_float(
                env, "BPWATCH_ACK_DEADLINE_MINUTES", d.ack_deadline_minutes, lo=0.001
            ),
            ack_settle_seconds=_float(env, "BPWATCH_ACK_SETTLE_SECONDS", d.ack_settle_seconds),
            adherence_device_only=_bool(
                env, "BPWATCH_ADHERENCE_DEVICE_ONLY", d.adherence_device_only
            ),
            anomalies_retention_days=_float(
                env, "BPWATCH_ANOMALIES_RETENTION_DAYS", d.anomalies_retention_days
            ),
            alerts_retention_days=_float(
                env, "BPWATCH_ALERTS_RETENTION_DAYS", d.alerts_retention_days
            ),
            home_averages_retention_days=_float(
                env, "BPWATCH_HOME_AVERAGES_RETENTION_DAYS", d.home_averages_retention_days
            ),
            adherence_retention_days=_float(
                env, "BPWATCH_ADHERENCE_RETENTION_DAYS", d.adherence_retention_days
            ),
            log_level=_choice(
                env,
                "BPWATCH_LOG_LEVEL",
                d.log_level,
                ("debug", "info", "warning", "error", "critical"),
            ).upper(),
            sim_patients=_int(env, "BPWATCH_SIM_PATIENTS", d.sim_patients, minimum=1),
            sim_rate=_float(env, "BPWATCH_SIM_RATE", d.sim_rate),
            sim_speedup=_sim_speedup(env, d.sim_speedup),
            sim_count=_int(env, "BPWATCH_SIM_COUNT", d.sim_count),
            sim_seed=_int(env, "BPWATCH_SIM_SEED", d.sim_seed),
            sim_fault_rate=_float(env, "BPWATCH_SIM_FAULT_RATE", d.sim_fault_rate, lo=0.0, hi=1.0),
            sim_output=env.get("BPWATCH_SIM_OUTPUT", "").strip() or d.sim_output,
            sim_truth=Path(env["BPWATCH_SIM_TRUTH"]) if env.get("BPWATCH_SIM_TRUTH") else None,
            sim_bundle=_int(env, "BPWATCH_SIM_BUNDLE", d.sim_bundle, minimum=1),
            sim_home_share=_float(env, "BPWATCH_SIM_HOME_SHARE", d.sim_home_share, lo=0.0, hi=1.0),
            sim_start=_datetime(env, "BPWATCH_SIM_START"),
            sim_ack_share=_float(env, "BPWATCH_SIM_ACK_SHARE", d.sim_ack_share, lo=0.0, hi=1.0),
            sim_ack_delay_minutes=_float(
                env, "BPWATCH_SIM_ACK_DELAY_MINUTES", d.sim_ack_delay_minutes
            ),
            sim_postpartum_share=_float(
                env, "BPWATCH_SIM_POSTPARTUM_SHARE", d.sim_postpartum_share, lo=0.0, hi=1.0
            ),
            sim_low_adherence_share=_float(
                env, "BPWATCH_SIM_LOW_ADHERENCE_SHARE", d.sim_low_adherence_share, lo=0.0, hi=1.0
            ),
        )


DEFAULTS = Settings()  # the defaults, for code that takes settings one by one


def load_or_exit() -> Settings:
    """For entry points: settings, or one line on stderr naming the fix and exit 2."""
    try:
        return Settings.from_env()
    except ConfigError as exc:
        import sys

        sys.stderr.write(f"bpwatch: configuration error: {exc}\n")
        raise SystemExit(2) from None
