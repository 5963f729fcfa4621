"""bulkjobs: a job engine for bulk content operations with a live, resumable event stream.

This package is the kernel: what every process shares (settings, errors, Redis key names,
connections, the sync log, tokens, logs, metrics and rate-limit counters).  It imports
nothing of the project.  The layers above it: ``models`` (tables, engine, selection,
accounts, ops stats), ``worker`` (Celery app and jobs) and ``stream`` (websocket relay and
client), then ``api`` (HTTP dialects and the ops dashboard) and ``cli`` (the command line).
README.md, "Layout".
"""

__version__ = "0.1.0"
