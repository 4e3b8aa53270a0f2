"""What the Hypothesis models of the scripts share: how one is run."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, run_state_machine_as_test


def run_model(machine: type[RuleBasedStateMachine], url: str, steps: int) -> None:
    """Run a model against the Redis at ``url`` (the machine reads it as ``machine.url``):
    ``PERSEID_MODEL_EXAMPLES`` examples (100; ``make model-long`` asks for 2,000) of up to
    ``steps`` steps, with no deadline (real Redis round trips vary)."""
    machine.url = url  # type: ignore[attr-defined]
    run_state_machine_as_test(
        machine,
        settings=settings(
            max_examples=int(os.environ.get("PERSEID_MODEL_EXAMPLES", "100")),
            stateful_step_count=steps,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
