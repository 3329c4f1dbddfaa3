"""Prometheus rules, Alertmanager config, the webhook trigger, incidents and the fine-tune job (alerting issue)."""
