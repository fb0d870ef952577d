"""Print the requirements of the gradsweep image, one per line, from pyproject.toml.

The Dockerfile installs these before the source is copied, so that their layer is rebuilt only
when pyproject.toml changes; offline-build.sh puts the same list, and the build backend's
requirements (`--build`), into the wheelhouse.

    python requirements.py PYPROJECT [EXTRA,...] [--build]
"""

import sys
import tomllib

path, extras = sys.argv[1], [name for name in (sys.argv[2:3] or [""])[0].split(",") if name]
pyproject = tomllib.load(open(path, "rb"))
requirements = list(pyproject["project"]["dependencies"])
requirements += [r for name in extras for r in pyproject["project"]["optional-dependencies"][name]]
if "--build" in sys.argv:
    requirements += pyproject["build-system"]["requires"]
print("\n".join(requirements))
