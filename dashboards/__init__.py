"""Grafana dashboards rendered from monitor.metric_names, and their provisioning (dashboards issue)."""
