"""The publish workflow (.github/workflows/publish.yml) is valid and builds what the README builds.

GitHub only reports a broken workflow after a push; these tests check it here, offline, against
the GitHub workflow schema vendored in ``check-jsonschema``, and check that it runs the README's
book command and publishes the student edition beside the book.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW = ROOT / ".github" / "workflows" / "publish.yml"


def _validate(path: Path) -> subprocess.CompletedProcess:
    """check-jsonschema with its built-in (vendored, offline) GitHub workflow schema."""
    command = [sys.executable, "-m", "check_jsonschema", "--builtin-schema",
               "vendor.github-workflows", str(path)]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def _steps(workflow: dict) -> list[dict]:
    return [step for job in workflow["jobs"].values() for step in job.get("steps", [])]


def test_workflow_matches_githubs_schema():
    done = _validate(WORKFLOW)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("edit", [
    ("    runs-on: ubuntu-latest\n    timeout-minutes", "    timeout-minutes"),  # no runner
    ("      - uses: actions/checkout@v4\n", "      - actions/checkout@v4\n"),  # a bare string
    ("  pages: write\n", "  pages: publish\n"),  # not a permission level
], ids=["no-runs-on", "string-step", "bad-permission"])
def test_a_broken_workflow_is_rejected(tmp_path, edit):
    """The check can fail: one text edit that GitHub would refuse, and only that edit."""
    old, new = edit
    text = WORKFLOW.read_text()
    assert text.count(old) == 1, f"the workflow changed: update this test's edit {old!r}"
    path = tmp_path / "broken.yml"
    path.write_text(text.replace(old, new))
    assert _validate(path).returncode != 0


def test_workflow_builds_with_the_readme_command_and_publishes_both_editions():
    workflow = yaml.safe_load(WORKFLOW.read_text())
    runs = "\n".join(step.get("run", "") for step in _steps(workflow))
    readme = (ROOT / "README.md").read_text()
    assert "make book" in readme and "make book" in runs, "build with the README's command"
    assert "make student-book" in runs and "notebooks.py --student" in runs
    uses = [step.get("uses", "") for step in _steps(workflow)]
    assert any(u.startswith("actions/upload-pages-artifact@") for u in uses)
    assert any(u.startswith("actions/deploy-pages@") for u in uses)
    assert workflow["permissions"]["pages"] == "write"


def test_student_book_target_hides_solutions_from_the_executed_cache():
    """``make student-book`` flips hide_solutions and reuses the execution cache (dry run)."""
    done = subprocess.run(["make", "-n", "student-book"], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "hide_solutions: true" in done.stdout
    assert "cp -r _build/.jupyter_cache _build/student/_build/" in done.stdout
