"""Print what the minimum-versions test job needs: the lowest allowed versions, and the core tests.

`requirements.txt` owns FreezeLab's version ranges. This script turns each core package's lower
bound into a pin of that minor version (`keras>=3.10,<4` -> `keras==3.10.*`, the newest patch of
the lowest allowed minor), and lists the test files that need only the core (no Streamlit, no
browser), so `make test-minimum` can install the oldest allowed core into its own venv and run
them: the lower bounds are tested, not guessed.

Usage:
    python scripts/minimum_versions.py pins    # one pin per line, for pip install
    python scripts/minimum_versions.py tests   # the core test files, for pytest
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The packages models/ and its tests use; Streamlit and plotly belong to the dashboard only.
CORE_PACKAGES = ("tensorflow", "keras", "numpy", "pandas", "scikit-learn", "pillow")
# A test that imports any of these needs the dashboard or a browser.
NOT_CORE_IMPORTS = ("streamlit", "components", "plotly", "playwright", "tests.browser", "app")
_REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9_.-]+)\s*>=\s*([0-9][0-9.]*)")


def minimum_pins(requirements: Path = ROOT / "requirements.txt") -> list[str]:
    """The lowest allowed minor version of each core package, e.g. "keras==3.10.*".

    Raises:
        ValueError: When a core package has no `>=` lower bound in requirements.txt.

    Example:
    >>> minimum_pins()[:1]
    ['tensorflow==2.16.*']
    """
    bounds: dict[str, str] = {}
    for line in requirements.read_text().splitlines():
        match = _REQUIREMENT.match(line.split("#", 1)[0])
        if match:
            bounds[match.group(1).lower()] = match.group(2)
    pins = []
    for package in CORE_PACKAGES:
        if package not in bounds:
            raise ValueError(
                f"requirements.txt gives no lower bound (>=) for {package!r}; each core "
                f"package needs one ({', '.join(CORE_PACKAGES)})."
            )
        major_minor = ".".join(bounds[package].split(".")[:2])
        pins.append(f"{package}=={major_minor}.*")
    return pins


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
    return found


def core_tests(folder: Path = ROOT / "tests") -> list[str]:
    """Test files (relative to the repository) that import nothing of the dashboard or browser.

    Example:
    >>> "tests/test_tree.py" in core_tests()
    True
    """
    selected = []
    for path in sorted(folder.glob("test_*.py")):
        imported = _imports(path)
        if not any(
            name == blocked or name.startswith(blocked + ".")
            for name in imported
            for blocked in NOT_CORE_IMPORTS
        ):
            selected.append(str(path.relative_to(ROOT)))
    return selected


def main(argv: list[str]) -> int:
    """Prints the pins or the core tests, one per line."""
    commands = {"pins": minimum_pins, "tests": core_tests}
    if len(argv) != 1 or argv[0] not in commands:
        print(
            f"usage: python scripts/minimum_versions.py {{{'|'.join(commands)}}}", file=sys.stderr
        )
        return 2
    print("\n".join(commands[argv[0]]()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
