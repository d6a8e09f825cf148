"""consistbench: measure and improve how consistently a generator answers equivalent queries.

The ``benchmark`` package holds the data schema, the query-variant generators, the metrics,
the scorer and the ``consistbench`` command line.
"""

__version__ = "0.1.0"
