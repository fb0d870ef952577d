"""What the tests and the benchmarks share, written once.

    processes   free ports, the `gradsweep` command, the service's processes (Stack, running_stack)
    sweeps      reading a sweep's every run a page at a time, waiting until a sweep has finished
    databases   a PostgreSQL database or schema of one's own, an emptied Redis database
    services    a missing service: a failure in CI, a skip elsewhere; polling until something holds
    curves      what a trained sweep must have stored, bit for bit
"""
