"""The live dashboard: HTTP app, fleet model, series, sampling state, kopf glue."""
