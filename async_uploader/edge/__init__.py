"""The edge: the one place each foreign thing is touched. HTTP (sockets of our own with h11; aiohttp only through an
https:// proxy), SigV4 (botocore), the source files and streams, the checkpoint file."""
