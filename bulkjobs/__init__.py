"""bulkjobs: a job engine for bulk content operations with a live, resumable event stream.

This package holds what every process shares: settings, errors, Redis key names, the sync
log, tokens and the CLI.  The subsystems live beside it: ``models`` (tables, engine,
selection), ``worker`` (Celery app and jobs), ``stream`` (websocket relay and client) and
``api`` (HTTP dialects and the ops dashboard).
"""

__version__ = "0.1.0"
