"""Command-line tools around the pipeline (run with ``python -m lib.tools.NAME``).

admin    create or delete topics, index templates and aliases (``make setup``)
summary  the reconciled summary of a run (what ``make demo`` prints)
report   the dashboard views as one HTML file, for people without Kibana
recovery_store  back up and restore the monitor's recovery store (docs/operations.md)
"""
