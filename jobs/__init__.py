"""Entry points run by Kubernetes Jobs (and by ``make demo``): train, load, trigger."""
