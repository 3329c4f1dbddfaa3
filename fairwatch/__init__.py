"""fairwatch: a streaming monitor for the fairness of deployed machine-learning models.

The library API is small: :class:`Monitor` (``update``/``update_many``, ``report``, ``snapshot``) and its
settings, :class:`MonitorConfig`. The command line (``fairwatch``), the Kafka worker
(``fairwatch.consumers``), the alert trigger (``fairwatch.alerts``) and the dashboards
(``fairwatch.dashboards``) are built on the same core, ``fairwatch.monitor``. Every error worded for the
user (a bad file, flag or configuration) is a :class:`FairwatchError`.
"""

__version__ = "0.1.0"

from fairwatch.monitor.api import (  # noqa: E402
    AttributeSnapshot,
    Breach,
    GenerationAttributeSnapshot,
    GenerationGroupSnapshot,
    GroupSnapshot,
    ModelSnapshot,
    Monitor,
)
from fairwatch.monitor.config import ConfigError, MonitorConfig, Thresholds  # noqa: E402
from fairwatch.monitor.errors import FairwatchError  # noqa: E402
from fairwatch.monitor.events import Event, Rejection  # noqa: E402

__all__ = ["AttributeSnapshot", "Breach", "ConfigError", "Event", "FairwatchError", "GenerationAttributeSnapshot",
           "GenerationGroupSnapshot", "GroupSnapshot", "ModelSnapshot", "Monitor", "MonitorConfig", "Rejection",
           "Thresholds", "__version__"]
