"""dayone matrix: the store, ingest, queries and the pure summaries over results."""
