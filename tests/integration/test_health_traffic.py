"""Traffic follows GPU health through the real LiteLLM proxy (issue 15, point 2).

Four stand-ins on four fake GPUs scored 1, 0.5, 0.2 and 0 (under gpu.health.evict_below): the
daemon puts the shares in the rotation file, the proxy's callback routes by them, and the requests
counted by the proxy's own x-litellm-model-id header land in proportion; the evicted one gets none.
When the GPU heals its share comes back. bench/health_share.py measures the same over 1,000 requests.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.integration.harness import Daemon, Fleet, wait_for
from tests.integration.health_fleet import expected_shares, health_fleet, scenario
from tests.integration.test_litellm import rotation

pytestmark = pytest.mark.engine

REQUESTS = 170  # 100 : 50 : 20 : 0 by the design


def test_requests_follow_the_gpu_health_scores_and_an_evicted_gpu_gets_none(
    fleet: Fleet, daemons: list[Daemon], tmp_path: Path, prefix: str
) -> None:
    scores = [1.0, 0.5, 0.2, 0.0]
    with health_fleet(fleet, tmp_path, prefix, scores, daemons=daemons) as hf:
        wanted = {hf.ids[1]: 0.5, hf.ids[2]: 0.2}
        wait_for(
            lambda: (
                rotation(hf.rotation_file).get("weights") == wanted and hf.ids[3] in rotation(hf.rotation_file)["out"]
            ),
            40,
            "the shares and the eviction in the rotation file",
        )
        assert "uncorrectable ECC" in rotation(hf.rotation_file)["out"][hf.ids[3]]
        served, failures = hf.count(REQUESTS)
        assert failures == []
        for ident, share in zip(hf.ids, expected_shares(scores), strict=True):
            assert abs(served[ident] / REQUESTS - share) <= 0.05, (ident, served)
        assert served[hf.ids[3]] == 0

        # The GPU heals (the error counter is volatile: a driver reload clears it): its share comes back.
        (tmp_path / "scenario.txt").write_text(scenario([1.0, 0.5, 0.2, 1.0]))
        wait_for(lambda: hf.ids[3] not in rotation(hf.rotation_file).get("out", {hf.ids[3]: 1}), 40, "GPU 3 back")
        again, failures = hf.count(54)  # 20 : 10 : 4 : 20
        assert failures == [] and again[hf.ids[3]] >= 15, again
        status = json.loads(hf.daemon.cli("status", "--json").stdout)
        rotation_view = status["router"]["litellm"]["rotation"]
        assert rotation_view[hf.ids[1]]["share"] == 0.5 and "GPU 1 health 0.50" in rotation_view[hf.ids[1]]["health"]
        text = hf.daemon.cli("status").stdout
        assert f"share: {hf.ids[2]}: 0.20 of its weight (GPU 2 health 0.20" in text, text
