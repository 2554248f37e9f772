"""Stage 3: scores, metrics, scale recommendation, baseline comparison, pytest plugin."""
