"""The storage layer's exceptions: callers never see SQLAlchemy's.

StorageError
├── NotFound              no sweep or run with that id
├── DatabaseUnavailable   the database could not be reached or was locked; worth retrying
├── SchemaOutOfDate       the database needs `gradsweep db upgrade`
└── SweepActive           the sweep has running runs, which a delete would pull from under their workers
"""


class StorageError(Exception):
    """The database refused an operation; also the base of every storage exception."""


class NotFound(StorageError):
    pass


class DatabaseUnavailable(StorageError):
    pass


class SchemaOutOfDate(StorageError):
    pass


class SweepActive(StorageError):
    pass
