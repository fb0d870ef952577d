"""The engine must stay small enough to read in one sitting (teenygrad keeps such a budget)."""

from pathlib import Path

from gradsweep import engine

LINE_BUDGET = 730  # 700 until the optimizers' constants could be searched over (29 lines)


def test_the_engine_fits_its_line_budget():
    root = Path(engine.__file__).parent
    lines = sum(len(path.read_text().splitlines()) for path in root.rglob("*.py"))
    assert lines <= LINE_BUDGET, f"engine/ has {lines} lines; the budget is {LINE_BUDGET}"


def test_the_engine_imports_neither_the_service_nor_the_worker():
    root = Path(engine.__file__).parent
    for path in root.rglob("*.py"):
        text = path.read_text()
        for above in ("gradsweep.service", "gradsweep.worker", "import service", "from service", "import worker",
                      "from worker"):
            assert above not in text, (path, above)
