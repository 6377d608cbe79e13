"""The engine: the async shell that awaits and calls into the core. ``Uploader`` and its handles, the request
machinery, one upload's phases, sending parts, batches of read sets."""
