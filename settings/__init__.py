"""Settings, jobs and caches. Importing the package exports the model cache folders."""

from settings.caches import export_cache_env

export_cache_env()
