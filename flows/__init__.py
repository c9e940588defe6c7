import os

import settings  # noqa: F401  (exports TORCH_HOME / HF_HOME before any ML import)

# The pipeline runs offline; Prefect's usage telemetry would only log failed connections.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
# With no PREFECT_API_URL a run starts a temporary server; the first start on a new PREFECT_HOME migrates the
# database, which takes longer than Prefect's default 20 s on a small machine.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
