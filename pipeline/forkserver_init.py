"""Imported only by the stage forkserver (pipeline.stage_process.PRELOAD), before it forks any stage.

Slurm ends a job (`scontrol requeue`, pre-emption, scancel, the time limit) by sending SIGTERM to every process
of the job. The forkserver must outlive that signal: it is what reports each stage's exit status to reproduce.py,
and a dead forkserver turns the stage's "saved and stopped" (exit 143) into an unknown status (255), taken for a
failure. Each stage restores the default SIGTERM handling first thing (stage_process._run_script)."""
import signal

signal.signal(signal.SIGTERM, signal.SIG_IGN)
