"""scripts/gpu_smoke.sh runs on the CPU at tiny sizes, so that it is known to work the day a GPU is lent."""
import subprocess

import pytest
from conftest import ROOT


@pytest.mark.slow
def test_the_gpu_smoke_script_passes_every_step_on_the_cpu(tmp_path):
    result = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_smoke.sh"), "--device", "cpu"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=1500,
                            env={**__import__("os").environ, "SMOKE_WORKDIR": str(tmp_path / "smoke")})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    steps = [line for line in result.stdout.splitlines() if line.startswith("== ")]
    assert len(steps) == 8 and "smoke test passed on cpu" in steps[-1], steps
    assert "cpu against the device: 0" in result.stdout          # the same device: bit-identical
    assert "stage processes seen" in result.stdout and "eigh of zeros" in result.stdout
