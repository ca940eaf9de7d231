"""lib.sim at program scale: the batched and cached paths give the scalar path's bytes."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from lib.settings import Settings
from lib.sim import cohort, draws
from lib.sim import stream as sim

BASE = Settings(sim_patients=60, sim_count=6000, sim_seed=5, sim_fault_rate=0.2)


def test_vectorised_draws_are_the_scalar_draws() -> None:
    keys = draws.stream_keys(5, 0x7A, np.arange(5000))
    for n in (0, 1, 9, 1000):
        assert draws.uniforms_of(keys, n).tolist() == [draws.uniform(k, n) for k in keys.tolist()]
        assert draws.normals_of(keys, n) == [draws.normal(k, n) for k in keys.tolist()]


@pytest.mark.parametrize("seed", [8, 42])
def test_start_states_are_the_scalar_start_and_first_walk(seed: int) -> None:
    attrs = cohort.attributes(seed, np.arange(3000))
    states = cohort.start_states(seed, attrs, np.arange(3000))
    for row, state in enumerate(states):
        patient = cohort.make_patient(seed, row, attrs, row)
        traj = cohort.Trajectory.start(patient, seed)
        traj.next_acute_start(traj.t)  # what the first reading caches
        assert state == traj.pack(), patient


@pytest.mark.parametrize(
    "settings,kw",
    [
        (BASE, {}),
        (replace(BASE, sim_home_share=0.3), {"bundle_size": 3}),
        (replace(BASE, sim_count=0), {"hours": 20.0, "worker_index": 1, "worker_count": 2}),
    ],
)
def test_small_caches_give_the_same_messages(
    monkeypatch: pytest.MonkeyPatch, settings: Settings, kw: dict
) -> None:
    """Patients leave the unpacked cache and start in chunks: nothing of the output moves."""
    want = [(m.key, m.value, m.emitted_at, m.expected) for m in sim.messages(settings, **kw)]
    monkeypatch.setattr(sim, "_LIVE", 3)
    monkeypatch.setattr(sim, "_START_CHUNK", 4)
    got = [(m.key, m.value, m.emitted_at, m.expected) for m in sim.messages(settings, **kw)]
    assert got == want
