"""gradsweep's reverse-mode autodiff: the seed's scalar `Variable` and its vectorised twin `Tensor`.

This package depends on numpy only; the service and the worker use it, never the reverse.
"""

from gradsweep.engine.tensor import NoGradientError, Tensor, unbroadcast
from gradsweep.engine.variable import Variable, to_dot

__all__ = ["NoGradientError", "Tensor", "Variable", "to_dot", "unbroadcast"]
