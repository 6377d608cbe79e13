"""The edge: the one place each foreign thing is touched. HTTP (aiohttp), SigV4 (botocore), the source files
and streams, the checkpoint file."""
