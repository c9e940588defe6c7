import settings  # noqa: F401  (exports TORCH_HOME / HF_HOME before any ML import)
