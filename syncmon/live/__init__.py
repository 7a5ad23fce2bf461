"""The live side: join LiveKit rooms, feed the analysis core, serve Prometheus metrics."""
