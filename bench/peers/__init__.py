"""Each peer's jobs and enqueuer, run with that peer's own virtual environment."""
