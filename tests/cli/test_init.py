"""``abode init DIR`` (issue 10, item 6); the project it writes is run end to end in
tests/package against the installed wheel."""

from __future__ import annotations

from pathlib import Path

import pytest

from abode.cluster.cli.init import module_name
from tests.cli.helpers import run_abode, write


@pytest.mark.parametrize(("folder", "module"), [
    ("hello-world", "hello_world"), ("Shop", "shop"), ("json", "json_app"),
    ("abode", "abode_app"), ("2048", "app_2048"), ("tests", "tests_app"), ("class", "class_app"),
])
def test_the_app_module_is_named_after_the_folder_and_shadows_nothing(
    folder: str, module: str
) -> None:
    assert module_name(folder) == module


def test_init_writes_the_starter_and_says_how_to_run_it(tmp_path: Path) -> None:
    result = run_abode("init", "my-app", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "my-app").iterdir()) == [
        ".gitignore", "README.md", "my_app.py", "pyproject.toml", "test_my_app.py"]
    assert "abode dev my_app.py" in result.stdout and "python -m pytest" in result.stdout
    pyproject = (tmp_path / "my-app" / "pyproject.toml").read_text()
    assert 'dependencies = ["abode>=' in pyproject and 'py-modules = ["my_app"]' in pyproject
    assert "from my_app import Counter, edge" in (tmp_path / "my-app" / "test_my_app.py").read_text()


def test_init_changes_no_existing_project(tmp_path: Path) -> None:
    keep = write(tmp_path / "busy" / "app.py", "# mine\n")
    result = run_abode("init", "busy", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip() == ("abode: busy exists and is not an empty folder: abode init "
                                     "writes a new project, it changes none")
    assert keep.read_text() == "# mine\n" and len(list(keep.parent.iterdir())) == 1
