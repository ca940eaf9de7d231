"""The general path: ``parse`` and every message the fast path does not take (and the
tests' oracle): a lone resource or a Bundle's entries, with at most one dead letter per
message.

Part of :mod:`lib.monitor.fhir` (docs/fhir-input.md has the input specification).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from typing import Any

import orjson

from lib.domain import (
    DeadLetter,
    Outcome,
    Skipped,
)
from lib.monitor.fhir.fastpath import (
    _common_outcomes,
)
from lib.monitor.fhir.fields import (
    _AVERAGE,
    _PANEL,
    MAX_BUNDLE_ENTRIES,
    MAX_DETAIL_ENTRIES,
    MAX_MESSAGE_BYTES,
    _as_bytes,
    _Bad,
    _dead,
    _name,
)
from lib.monitor.fhir.pairs import (
    _from_parts,
    _members,
    _pair_outcome,
    _pairs_by_time,
    _Part,
    _part,
)
from lib.monitor.fhir.resources import (
    _average,
    _first_code,
    _kind_of,
    _observation,
)

log = logging.getLogger(__name__)


def parse(
    value: bytes,
    key: bytes | None = None,
    source: str = "",
    headers: Iterable[tuple[str, bytes]] | None = (),
) -> list[Outcome]:
    """One message -> one outcome per BP reading or other resource it carries (module doc)."""
    try:
        return _parse(value, key, source, headers)
    except Exception as exc:  # a defect here must not lose the message: dead-letter it
        log.error("fhir.parse defect error=%s source=%s", type(exc).__name__, source)
        return [_dead(value, key, source, headers, "internal_error", type(exc).__name__)]


def _parse(
    value: bytes, key: bytes | None, source: str, headers: Iterable[tuple[str, bytes]] | None
) -> list[Outcome]:
    if type(value) is not bytes:
        value = _as_bytes(value)
    outcomes = _common_outcomes(value, source)
    return _parse_json(value, key, source, headers) if outcomes is None else outcomes


def _parse_json(
    value: bytes, key: bytes | None, source: str, headers: Iterable[tuple[str, bytes]] | None
) -> list[Outcome]:
    """The general path: every message the fast path does not take (and the tests' oracle)."""
    if len(value) > MAX_MESSAGE_BYTES:
        detail = f"{len(value)} bytes > {MAX_MESSAGE_BYTES}"
        return [_dead(value, key, source, headers, "too_large", detail)]
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        detail = f"not JSON at char {exc.pos}" if value else "empty message"
        return [_dead(value, key, source, headers, "invalid_json", detail)]
    if type(doc) is not dict:
        return [_dead(value, key, source, headers, "not_observation", "JSON is not an object")]
    rtype = doc.get("resourceType")
    if rtype == "Observation":
        message = _Message(value, key, source, headers)
        message.resource(doc, None, None)
    elif rtype == "Bundle":
        entries = doc.get("entry")
        if entries is None or entries == []:
            return [Skipped("Bundle (no entries)", key, source)]
        if type(entries) is not list:
            return [_dead(value, key, source, headers, "not_observation", "entry is not an array")]
        if len(entries) > MAX_BUNDLE_ENTRIES:
            detail = f"Bundle has {len(entries)} entries > {MAX_BUNDLE_ENTRIES}"
            return [_dead(value, key, source, headers, "too_large", detail)]
        message = _Message(value, key, source, headers)
        for i, entry in enumerate(entries):
            message.entry(i, entry)
    elif type(rtype) is str and _RESOURCE_TYPE.fullmatch(rtype):
        return [Skipped(rtype, key, source)]
    else:
        detail = f"resourceType {_name(rtype)} is not a FHIR resource type"
        return [_dead(value, key, source, headers, "not_observation", detail)]
    return message.outcomes()


_RESOURCE_TYPE = re.compile(r"[A-Z][A-Za-z]{1,63}")


class _Message:
    """The outcomes of one message's resources (a lone Observation, or a Bundle's entries).

    Panels and averages become outcomes at once; single systolic / diastolic Observations
    wait for their partner (:meth:`outcomes` pairs them). Problems are collected: the message
    gets at most one dead letter, after its good outcomes.
    """

    __slots__ = ("headers", "key", "out", "panels", "parts", "problems", "raw", "source")

    def __init__(self, raw: bytes, key: bytes | None, source: str, headers: Any) -> None:
        self.raw, self.key, self.source, self.headers = raw, key, source, headers
        self.out: list[Outcome] = []
        self.problems: list[tuple[int | None, str, str]] = []  # (entry, reason, detail)
        self.parts: list[_Part] = []
        self.panels: list[tuple[int | None, dict[str, Any], Any]] = []  # hasMember panels

    def entry(self, i: int, entry: Any) -> None:
        if type(entry) is not dict:
            self.problems.append((i, "not_observation", "entry is not an object"))
            return
        res = entry.get("resource")
        if res is None:  # e.g. a transaction DELETE: no resource to read
            self.out.append(Skipped("Bundle entry without resource", self.key, self.source))
            return
        if type(res) is not dict:
            self.problems.append((i, "not_observation", "entry.resource is not an object"))
            return
        rtype = res.get("resourceType")
        if rtype == "Observation":
            self.resource(res, entry.get("fullUrl"), i)
        elif type(rtype) is str and _RESOURCE_TYPE.fullmatch(rtype):
            self.out.append(Skipped(rtype, self.key, self.source))
        else:
            self.problems.append((i, "not_observation", f"resourceType {_name(rtype)}"))

    def resource(self, res: dict[str, Any], full_url: Any, i: int | None) -> None:
        """One Observation: an outcome now, a part to pair, or a problem."""
        source = self.source
        try:
            kind = _kind_of(res.get("code"))
            if kind is _PANEL:
                if "component" not in res and type(res.get("hasMember")) is list:
                    self.panels.append((i, res, full_url))
                    return
                self.out.append(_observation(res, source, full_url))
            elif kind is _AVERAGE:
                self.out.append(_average(res, source, full_url))
            elif kind is None:
                self.out.append(Skipped(f"Observation {_first_code(res)}", self.key, source))
            else:
                self.parts.append(_part(res, source, full_url, kind, i))
        except _Bad as bad:
            self.problems.append((i, bad.reason, bad.detail))

    def outcomes(self) -> list[Outcome]:
        if self.panels or self.parts:
            self._pair()
        if self.problems:
            self.out.append(self._dead_letter())
        return self.out

    def _pair(self) -> None:
        unused = list(self.parts)
        for i, panel, full_url in self.panels:
            try:
                members = _members(panel, unused)
                self.out.append(_from_parts(panel, full_url, members, self))
            except _Bad as bad:
                self.problems.append((i, bad.reason, bad.detail))
        for sys_part, dia_part, lone in _pairs_by_time(unused):
            if lone is not None:
                partner = "diastolic" if lone.kind == "systolic" else "systolic"
                detail = f"{lone.kind} Observation without a {partner} partner"
                self.problems.append((lone.entry, "missing_component", detail))
                continue
            try:
                self.out.append(_pair_outcome(sys_part, dia_part, self.source))
            except _Bad as bad:
                self.problems.append((sys_part.entry, bad.reason, bad.detail))

    def _dead_letter(self) -> DeadLetter:
        _, reason, detail = self.problems[0]
        if len(self.problems) > 1 or self.problems[0][0] is not None:
            detail = _summary(self.problems)
        return _dead(self.raw, self.key, self.source, self.headers, reason, detail)


def _summary(problems: list[tuple[int | None, str, str]]) -> str:
    """``entry[3] missing_component: no diastolic; entry[7] bad_unit: ...`` (bounded)."""
    shown = [
        f"entry[{i}] {reason}: {detail}" if i is not None else f"{reason}: {detail}"
        for i, reason, detail in problems[:MAX_DETAIL_ENTRIES]
    ]
    more = len(problems) - len(shown)
    return "; ".join(shown) + (f"; and {more} more" if more > 0 else "")
