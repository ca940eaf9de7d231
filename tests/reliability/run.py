"""Run the reliability suite against the real local Kafka and Elasticsearch.

    python -m tests.reliability.run --fault FAULT    # crash, kafka-outage, es-outage,
                                                     # es-write-block, es-stop, disk, fuzz,
                                                     # ordering, all
    python -m tests.reliability.run --fault all --full     # the full sizes (minutes)

Prints one line per fault: runs (monitor processes), faults (kills / outages injected),
messages, lost, duplicated, and OK or FAIL with the problems found. Exit code 0 only if every
fault reconciled exactly. ``kafka-outage`` stops and restarts the shared local broker; the
others leave the services running (the Elasticsearch outage cuts a relay port; the write block
is set on the scenario's own indices).
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

from tests.reliability import scenarios
from tests.reliability.harness import base_settings

ORDER = (
    "crash",
    "es-outage",
    "es-write-block",
    "es-stop",
    "disk",
    "fuzz",
    "ordering",
    "kafka-outage",
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.reliability.run")
    parser.add_argument("--fault", choices=[*ORDER, "all"], default="all")
    parser.add_argument("--full", action="store_true", help="full sizes (issue 7)")
    parser.add_argument("--seed", type=int, default=None, help="override each scenario's seed")
    parser.add_argument("--workdir", type=Path, default=None, help="keep logs and files here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    sizes = scenarios.FULL if args.full else scenarios.CI
    faults = ORDER if args.fault == "all" else (args.fault,)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bpwatch-rel-"))
    base = base_settings()
    failed = 0
    print(f"reliability suite ({'full' if args.full else 'CI'} sizes), work dir {work}")
    for name in faults:
        started = time.monotonic()
        kwargs = {} if args.seed is None else {"seed": args.seed}
        tally = scenarios.SCENARIOS[name](base, work, sizes[name], **kwargs)
        print(f"{tally.line()} wall={time.monotonic() - started:.0f}s", flush=True)
        for problem in tally.problems:
            print(f"    - {problem}")
        failed += not tally.ok
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
