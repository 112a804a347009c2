"""A fault suite against real processes: a platform of its own (gunicorn, a qcluster, and a
PostgreSQL, a Redis and a Docker engine of its own) and every fault the recovery promise
covers, struck at it in turn: ``python -m faults`` (``make faults``), docs/faults.md.

It drives the platform from outside, as an operator and an API client would, and imports
nothing of it: ``parts`` (the stoppable parts), ``platform`` (the web and the cluster),
``client`` (submissions and reads, every answer counted), ``ledger`` (what was stored, and the
promise judged on it), ``scenarios`` (the faults) and ``suite`` (the whole run and its table).
"""
