"""Adapters that feed the fairwatch core: files (the embedded default), Kafka."""
