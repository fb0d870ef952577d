"""What both engines need of a graph: its nodes in an order that backward can walk.

A node is anything with `local_gradients`, pairs (child, local gradient or VJP), and `_order`, the
number it took from `creation_order` when it was made.
"""

from itertools import count
from operator import attrgetter
from typing import Any

# Every node takes the next number at creation. A node is always created after its children, so these
# numbers already order any graph topologically.
creation_order = count()


def newest_first(root: Any) -> list[Any]:
    """Every node `root` depends on, itself included, newest first: a reverse topological order.

    A breadth-first search, iterative so that depth is no limit, then one sort by creation number (no
    second, recursive, depth-first pass as in micrograd).
    """
    found, seen = [root], {root}
    for node in found:  # `found` grows while we walk it
        for child, _ in node.local_gradients:
            if child not in seen:
                seen.add(child)
                found.append(child)
    found.sort(key=attrgetter("_order"), reverse=True)
    return found
