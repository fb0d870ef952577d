"""What the dashboard's pages, scripts and styles share with the server, each named once.

base.html renders `BROWSER` into every page as a JSON data block (`#gradsweep-constants`, which api.js
reads) and sets the statuses' colours as CSS custom properties (`--succeeded`, `--stopped-early`…) for
dashboard.css. The colours of optimizers and learning rates come from service/palette.py, which the PNG and
SVG plots read too, so a PNG and a chart of any sweep agree.
"""

from __future__ import annotations

from importlib import metadata
from typing import Any

from gradsweep.service.api.routes.sweeps import MAX_PAGE
from gradsweep.service.api.schemas import RunCurvePublic
from gradsweep.service.domain.search_space import SearchSpace
from gradsweep.service.palette import (
    DIVERGED_COLOR, LEARNING_RATE_SCALE, LEARNING_RATE_STOPS, OPTIMIZER_COLORS, SPARE_COLORS, STOPPED_EARLY_COLOR,
)
from gradsweep.service.plots import HEADROOM, KNOWN_LINESTYLES, LOG_FLOOR
from gradsweep.service.storage import RunStatus

__all__ = ["BROWSER", "FRAGMENT_HEADER", "PLOTLY_URL", "RUNS_PAGE_SIZE", "STATUS_COLORS", "SWEEPS_PAGE_SIZE", "status_name"]

# The header with which dashboard.js asks for a page's content alone (see routes.py).
FRAGMENT_HEADER = "X-Gradsweep-Fragment"
SWEEPS_PAGE_SIZE = 50  # rows of the sweeps page
RUNS_PAGE_SIZE = 100  # rows of a sweep's runs table; the server sorts and pages, so a 10,000-run sweep is 100 pages
# plotly.js, as the Python package `plotly` ships it: served by us, so the charts need no internet. Its
# version is in the URL, so browsers may keep the file for good and an upgrade still reaches them.
PLOTLY_URL = f"/ui/vendor/plotly.min.js?v={metadata.version('plotly')}"

# A run's status: its badge, its dot and its share of a progress bar.
STATUS_COLORS: dict[str, str] = {
    RunStatus.SUCCEEDED: "#2e9e5b",
    RunStatus.RUNNING: "#2f6fdf",
    RunStatus.QUEUED: "#d5d9e0",
    RunStatus.DIVERGED: "#e08a1e",
    RunStatus.FAILED: "#c93c3c",
    RunStatus.CANCELLED: "#8a94a3",
    RunStatus.STOPPED_EARLY: STOPPED_EARLY_COLOR,
}
assert set(STATUS_COLORS) == set(RunStatus), "every status has a colour"

# Learning rates are grouped into at most this many bands per optimizer in the loss-curves chart: one
# colour, one legend entry and one trace each, so a 100-rate sweep still has a legend one can read and click;
# a band of one rate has that rate's colour on the palette's scale, a wider band the colour of its middle.
LEARNING_RATE_BANDS = 8
# plotly's names for the line styles plots.py gives the known optimizers.
_PLOTLY_DASHES = {"-": "solid", "--": "dash", ":": "dot"}


def status_name(status: str) -> str:
    """As a reader says it: "stopped early", not the API's "stopped_early"."""
    return status.replace("_", " ")


# For the scripts, as JSON; snake_case like the API's fields.
BROWSER: dict[str, Any] = {
    "fragment_header": FRAGMENT_HEADER,
    "plotly_url": PLOTLY_URL,
    "runs_per_request": MAX_PAGE,  # the most GET /sweeps/{id}/runs gives at once
    # The parameters each curve of GET /sweeps/{id}/losses carries; charts.js reads any other from the runs.
    "curve_parameters": [name for name in RunCurvePublic.model_fields if name in SearchSpace.model_fields],
    "status_names": {status.value: status_name(status) for status in RunStatus},
    "colors": {"statuses": {status.value: color for status, color in STATUS_COLORS.items()}},
    "learning_rate_bands": LEARNING_RATE_BANDS,
    # The known optimizers' line styles, in their fixed order (so pairs: a JSON object keeps no order);
    # any other optimizer gets a spare one, by name.
    "optimizer_dashes": [[name, _PLOTLY_DASHES[style]] for name, style in KNOWN_LINESTYLES.items()],
    # service/palette.py's tables, for display.js: one colour per optimizer, one fixed scale of learning rates.
    "palette": {"optimizers": OPTIMIZER_COLORS, "spare": SPARE_COLORS, "diverged": DIVERGED_COLOR,
                "learning_rate_scale": list(LEARNING_RATE_SCALE), "learning_rate_stops": LEARNING_RATE_STOPS},
    "log_floor": LOG_FLOOR,  # a log axis cannot show an exact zero
    "headroom": HEADROOM,  # the loss axis stops this factor above the highest start of a run that did not diverge
}
