"""The sweep domain: what a sweep is and how it is planned, free of storage, HTTP and queues.

Its value types (`records`: RunConfig, Run, Job, RunStatus, ...) are what every other layer
hands around; the search space and how a request becomes runs (`search_space`), batching
runs into jobs (`batching`), Bayesian proposals (`bayes`), early stopping (`early_stopping`),
a task's reference lines (`reference_lines`), down-sampling curves (`downsampling`), and the
rules for user text (`text`). It imports only the engine and the settings.
"""
