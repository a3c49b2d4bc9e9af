"""pipeline.commands.Chain at Slurm's time limit: requeued while it progresses, given up after --max-timeouts
attempts in a row without progress (issue 27)."""
import os

from pipeline.commands import Chain, Command
from utils.io import save_json
from utils.rundir import DONE_FILE, TRAIN_FILES


def test_a_chain_is_requeued_while_it_progresses_and_given_up_after_max_stalls_without(tmp_path):
    run = tmp_path / "rnd0"
    train = Command("train", ["train_classifier.py", "--epochs", "50"], run, run / "logs" / "train.log")
    measure = Command("stability", ["stability.py"], run / "stability", run / "logs" / "stability.log")
    chain = Chain("rnd0", run / "logs" / ".lock", [train, measure], max_stalls=1)
    last = run / TRAIN_FILES["last"]
    last.parent.mkdir(parents=True)

    def attempt(advance=None):
        """One attempt up to the time limit: what checkpoint returns (None: given up)."""
        chain.progress_at_start = chain.progress()
        if advance is not None:
            advance()
        return chain.checkpoint()

    epoch = iter(range(1, 100))

    def save_epoch():   # training saved last.pt after an epoch (a new modification time)
        last.write_text("")
        os.utime(last, ns=(next(epoch) * 10**9, next(epoch) * 10**9))

    def finish_training():
        save_json(run / DONE_FILE, {"argv": train.argv[1:]})

    for _ in range(5):   # more time limits than --max-timeouts, each with an epoch saved
        assert attempt(save_epoch) is not None and chain.stalls == 0
    assert attempt() is not None and chain.stalls == 1   # one without progress: still requeued
    assert attempt(finish_training) is not None and chain.stalls == 0
    assert attempt() is not None and chain.stalls == 1
    assert attempt() is None                               # the second in a row: given up
