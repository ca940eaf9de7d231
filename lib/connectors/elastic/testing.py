"""Testing helpers, as ``bytewax.testing``: the production writing step with a writer that
records its actions in memory instead of sending them.

:class:`TestingElasticSink` is an :class:`~.sink.ElasticSink` in every respect but its
writer, so a dataflow test runs the very step production runs (:func:`~.sink.write`, keyed
as production keys it, with its snapshot wait) and reads the actions it wrote, in order::

    actions = []
    flow = ...  # elastic.write("write_anomalies", keyed_actions, TestingElasticSink(actions))
    run_main(flow)
    assert actions == [("index", "obs-1", {...}), ("delete", "obs-2", None)]

It is not an Elasticsearch fake: nothing is deduplicated, encoded or indexed (the bulk core
has its own tests, and the integration tests write to a real Elasticsearch).
"""

from __future__ import annotations

from lib.connectors.elastic.bulk import Action
from lib.connectors.elastic.sink import ElasticSink
from lib.settings import Settings

__all__ = ["RecordingWriter", "TestingElasticSink"]


class RecordingWriter:
    """A writer (:class:`~.writer.Writer`) that appends every submitted action to ``out``,
    in submission order, and acknowledges at once; no thread, no client, no HTTP."""

    __test__ = False  # not a pytest test class

    def __init__(self, out: list[Action]) -> None:
        self.out = out
        self.closed = False
        self._submitted = 0

    def submit(self, actions: list[Action]) -> int:
        if actions:
            self.out.extend(actions)
            self._submitted += 1
        return self._submitted

    def wait(self, ticket: int | None = None) -> None:
        return None

    def finish(self, ticket: int | None = None) -> None:
        return None

    def close(self) -> None:
        self.closed = True


class TestingElasticSink(ElasticSink):
    """An :class:`~.sink.ElasticSink` whose writer records the actions into ``out``
    (a list shared by every worker of the process, as ``bytewax.testing.TestingSink``)."""

    __test__ = False  # not a pytest test class

    def __init__(self, out: list[Action], index: str = "testing") -> None:
        super().__init__(Settings(), index, writer_factory=lambda: RecordingWriter(out))
