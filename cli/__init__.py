"""The ``bulkjobs`` command line: the typer app in :mod:`cli.main`, its commands grouped by
what they act on.  A top layer, like ``api``: it may use ``worker``, ``stream``, ``models`` and
``bulkjobs``, and nothing below imports it."""
