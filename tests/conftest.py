"""Settings every test shares: the Hypothesis profiles (the unit and integration conftests add fixtures).

Why: a property test run with fresh random examples can fail by chance on a submission that
changed nothing near it (the config fuzz test once failed 8 runs in 19 before its bug was
fixed). CI must be reproducible, so with $CI set (CI=true on CI machines) the `ci` profile
derandomizes: the same examples every run, no example database carried between runs, and no
per-example deadline (a loaded runner is slow, not wrong). A failure there fails every time
and prints its reproduction blob.

Developers explore: without $CI Hypothesis draws random examples as usual, and saves the
failing ones in .hypothesis/ to replay first. `pytest --hypothesis-profile=dev` asks for that
random run even where $CI is set; `--hypothesis-profile=ci` reproduces what CI runs. The
command-line option wins over this file (the plugin loads it after the initial conftests).
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

# Both on Hypothesis's own defaults: without a parent a profile inherits whatever is loaded now,
# and Hypothesis itself loads a built-in "ci" profile on import when it sees $CI.
DEFAULT = settings.get_profile("default")
settings.register_profile(
    "ci",
    DEFAULT,
    derandomize=True,
    database=None,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("dev", DEFAULT, derandomize=False)

if os.environ.get("CI"):  # any value, as Hypothesis itself and most CI tools read it
    settings.load_profile("ci")
