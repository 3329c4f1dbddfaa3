"""fairwatch core: streaming group-fairness metrics, framework-free.

Nothing in this package imports ``consumers``, ``alerts`` or ``dashboards``.
"""

__version__ = "0.1.0"
