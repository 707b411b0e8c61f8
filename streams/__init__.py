"""Stream processors: normalise agency records, drop repeated events, resolve citizens."""
