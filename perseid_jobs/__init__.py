"""perseid-jobs: a distributed job scheduler for Python, coordinated through Redis."""

__version__ = "0.1.0"
