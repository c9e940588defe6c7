import os

import settings  # noqa: F401  (exports TORCH_HOME / HF_HOME before any ML import)

# The pipeline runs offline; Prefect's usage telemetry would only log failed connections.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
