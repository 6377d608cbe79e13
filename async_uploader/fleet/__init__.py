"""Beyond one process: request budgets shared by the processes of a machine (a locked file) or of a Dask cluster
(the scheduler), ownership leases, and batches run as Dask tasks."""
