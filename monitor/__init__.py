"""fairwatch's core: streaming group-fairness metrics, decisions and their export, framework-free.

Nothing in this package imports ``fairwatch.consumers``, ``fairwatch.alerts``, ``fairwatch.dashboards`` or
the command line (``fairwatch.cli``); an import-linter contract, run by the tests, says so.
"""
