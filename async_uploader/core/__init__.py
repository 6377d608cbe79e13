"""The pure core: plain, synchronous, no I/O. Settings, errors, plan, retry policy, rate arithmetic, the wire
format, the checkpoint's record format and the upload's state machine: everything that decides."""
