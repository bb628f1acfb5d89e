"""``ERNIEVIL2_REQUIRE_ORACLES=1`` (CI) can never pass by skipping: pytest run on a copy of the repo in fake
environments, once in required mode (must fail, saying why) and once as a developer's partial setup (must skip,
saying why).

The fake environments: no ``../shared`` beside the repo, Paddle / OpenCV unimportable, no PaddleNLP interpreter,
and a stray ``pytest.skip`` / ``skipif`` in a test (turned into a failure by ``tests/conftest.py``; a test marked
``gpu`` is deselected where there is no GPU, not skipped).
"""
from __future__ import annotations

from helpers import REQUIRE_ENV, SHARED_DATA_ENV, run_pytest_on_copy

REQUIRED = "ERNIEVIL2_REQUIRE_ORACLES=1: a missing oracle or test input is a failure, not a skip"


def run_both_ways(tmp_path, *args, **kwargs):
    """(required-mode run, partial-setup run) of the same selection in the same fake environment."""
    env = kwargs.pop("env", {})
    required = run_pytest_on_copy(tmp_path / "required", *args, env={**env, REQUIRE_ENV: "1"}, **kwargs)
    partial = run_pytest_on_copy(tmp_path / "partial", *args, env={**env, REQUIRE_ENV: None}, **kwargs)
    return required, partial


def assert_fails_and_skips(required, partial, reasons, count: int) -> None:
    assert required.returncode != 0, required.stdout[-3000:]
    # exit 5 when every collected module was skipped: "no tests ran"
    assert f"{count} skipped" in partial.stdout and partial.returncode in (0, 5), partial.stdout[-3000:]
    assert REQUIRED not in partial.stdout, partial.stdout[-3000:]
    assert required.stdout.count(REQUIRED) >= count, required.stdout[-3000:]
    for reason in reasons:
        assert reason in required.stdout and reason in partial.stdout, (reason, required.stdout[-3000:])


def test_missing_shared_data_and_paddlenlp_interpreter(tmp_path):
    no_python = tmp_path / "no_such_python"
    required, partial = run_both_ways(
        tmp_path, "tests/processing/test_tokenizer.py::test_special_ids_come_from_the_file",
        "tests/processing/test_image_processing.py::test_paddlenlp_variant_matches_paddlenlp",
        env={SHARED_DATA_ENV: None, "ERNIEVIL2_ORACLE_PYTHON": str(no_python)})
    shared = str(tmp_path / "required" / "shared" / "data")  # ../shared/data beside the copy: absent
    assert_fails_and_skips(required, partial, [f"oracle interpreter '{no_python}' not found"], count=2)
    assert (f"shared test data not found at '{shared}' (set ERNIEVIL2_SHARED_DATA or provide ../shared/data) "
            f"[{REQUIRED}]") in required.stdout
    assert "1 failed, 1 error" in required.stdout  # the vocab fixture errors, the oracle test fails
    assert "shared test data not found at " in partial.stdout


def test_missing_paddle_and_opencv(tmp_path):
    required, partial = run_both_ways(tmp_path, "tests/verify/test_parity.py", "tests/processing/test_image_processing.py",
                                      hidden_modules=["paddle", "cv2"])
    assert_fails_and_skips(required, partial, [f"the test dependency '{m}' cannot be imported ({m} is hidden by "
                                               "the test); pip install -r requirements-dev.txt"
                                               for m in ("paddle", "cv2")], count=2)
    assert "2 errors during collection" in required.stdout


STRAY_SKIPS = '''
import pytest


@pytest.mark.gpu
def test_needs_a_gpu():
    import torch

    assert torch.cuda.is_available()


def test_skips_itself():
    pytest.skip("a developer's shortcut")


@pytest.mark.skipif(True, reason="a marker someone left")
def test_marked():
    pass
'''


def test_any_other_skip_fails_in_required_mode(tmp_path):
    files = {"tests/test_stray_skips.py": STRAY_SKIPS}
    required, partial = run_both_ways(tmp_path, "tests/test_stray_skips.py", new_files=files)
    assert required.returncode == 1 and "1 failed" in required.stdout and "1 error" in required.stdout
    import torch

    if not torch.cuda.is_available():  # a GPU-only test is deselected, in both modes, never skipped
        assert "1 deselected" in required.stdout and "1 deselected" in partial.stdout
    for reason in ("a developer's shortcut", "a marker someone left"):
        assert f"skipped under {REQUIRE_ENV}=1, where every skip is a failure: Skipped: {reason}" in required.stdout
    assert partial.returncode == 0 and "2 skipped" in partial.stdout
