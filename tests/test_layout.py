"""The test tree has no __init__.py files, so pytest imports every test module by its basename:
two files with one basename in different folders stop collection of the whole suite."""
from collections import Counter
from pathlib import Path


def test_test_module_basenames_are_unique():
    root = Path(__file__).parent
    names = Counter(p.name for p in root.rglob("test_*.py") if ".venv" not in p.parts)
    assert names, "no test modules found"
    clashes = sorted(n for n, c in names.items() if c > 1)
    assert not clashes, f"test modules sharing a basename (rename one of each): {clashes}"
