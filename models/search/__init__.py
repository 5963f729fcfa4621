"""Search: the ``q`` and ``filter`` parsers (pure), the search index, and resolution to SQL.

* :mod:`models.search.query` — ``q`` text → :class:`~models.search.query.Query`;
* :mod:`models.search.filter` — ``filter`` JSON → a typed filter tree;
* :mod:`models.search.index` — the full-text index and :func:`~models.search.index.reindex`;
* :mod:`models.search.predicates` — a filter tree → a SQL predicate;
* :mod:`models.search.sql` — a search entry → ``INSERT INTO job_item …`` or a page of ids.
"""
