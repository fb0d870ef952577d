"""Training tasks a sweep can run. Each is a module with `make_data` and `train`."""
