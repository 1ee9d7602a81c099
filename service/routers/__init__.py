"""One router per resource: pages (HTML + JSON twins), api (/api/v1), badges, feed, health."""
