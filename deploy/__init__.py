"""Deployment files (Dockerfile, Prometheus and Grafana provisioning), shipped in the wheel as package data."""
