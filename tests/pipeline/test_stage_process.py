"""pipeline.stage_process: a stage server started for a Slurm job outlives Slurm's time-limit signal (issue 27)."""
import subprocess
import sys
import textwrap

from conftest import ROOT

# A stage holding a named semaphore (registered with the resource tracker, as a DataLoader's queue is) until told.
STAGE = """
import multiprocessing, sys, time
from pathlib import Path

lock = multiprocessing.get_context("spawn").Lock()
Path(sys.argv[1], "ready").touch()
while not Path(sys.argv[1], "go").exists():
    time.sleep(0.01)
del lock    # unlinked and unregistered with the tracker
print("stage finished")
"""

# The job's side: the server started as Chain.__call__ starts it in a Slurm job, the stage started; then SIGUSR2 to
# the server, its resource tracker and the stage, as Slurm sends it to every process of a job at its time limit.
JOB = """
import multiprocessing.forkserver, multiprocessing.resource_tracker, os, signal, sys, time
from pathlib import Path
from pipeline import stage_process

folder = Path(sys.argv[1])
stage_process._CONTEXT.set_forkserver_preload(["pipeline.forkserver_init"])   # the heavy imports change nothing
stage_process.start_server(ignored=(signal.SIGUSR2,))
stage = stage_process.StageProcess([str(folder / "stage.py"), str(folder)], Path.cwd(), folder / "stage.log")
while not (folder / "ready").exists():
    time.sleep(0.01)
for pid in (multiprocessing.forkserver._forkserver._forkserver_pid,
            multiprocessing.resource_tracker._resource_tracker._pid, stage.pid):
    os.kill(pid, signal.SIGUSR2)
time.sleep(0.3)
(folder / "go").touch()
print("exit status", stage.wait(timeout=60))
"""


def test_a_jobs_stage_server_and_resource_tracker_survive_the_time_limit_signal(tmp_path):
    """Killed by SIGUSR2, the server reported the finishing stage's status as unknown (255), and the stage, finding
    its tracker dead, started one of its own that wrote a `KeyError: '/loky-...'` traceback into its log."""
    (tmp_path / "stage.py").write_text(STAGE)
    (tmp_path / "stage.log").touch()
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(JOB), str(tmp_path)], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "exit status 0" in result.stdout
    log = (tmp_path / "stage.log").read_text()
    assert log == "stage finished\n", log
