"""Run the kmc CLI in-process and check its exit status, as httpie's test helper does."""

from __future__ import annotations

import contextlib
import io
import json
from dataclasses import dataclass
from typing import Any

from kmc.cli.main import main


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


def kmc(*args: str, expect: int | None = 0) -> Result:
    """Run ``kmc ARGS``; fail loudly on an unexpected exit status unless ``expect`` is None."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(arg) for arg in args])
    result = Result(code, out.getvalue(), err.getvalue())
    if expect is not None and code != expect:
        raise AssertionError(
            f"kmc {' '.join(args)} exited {code}, expected {expect}\n"
            f"--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
        )
    return result
