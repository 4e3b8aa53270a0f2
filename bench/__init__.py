"""The benchmark of perseid-jobs against RQ, Celery, arq and Dramatiq: ``make bench``.

Imports nothing beyond the standard library at package level, so the peers'
own virtual environments can import :mod:`bench.peers` too.
"""
