"""Every stage, run on a tiny run, writes exactly what its record in pipeline.contract promises: each file is an
instance of one of the stage's templates, every template has at least one instance, and each file holds the
record's keys (the arrays of an .npz, the keys of a .json object) and at least one key per prefix of per-layer or
per-k keys."""
import re

import numpy as np
import pytest
from stage_commands import STAGES, ensure

from pipeline import contract
from utils.io import load_json, load_torch
from utils.rundir import DONE_FILE

COMMANDS = {command.stage: name for name, command in STAGES.items() if command.stage}


def test_every_contract_stage_has_a_tiny_command():
    assert set(COMMANDS) == set(contract.STAGES)


@pytest.mark.parametrize("stage", sorted(contract.STAGES))
def test_stage_writes_what_its_contract_promises(stage_workdir, stage):
    command = STAGES[COMMANDS[stage]]
    ensure(stage_workdir, COMMANDS[stage])
    record = contract.stage(stage)
    folder = command.folder(stage_workdir)
    files = sorted(p.name for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    assert DONE_FILE in files
    matched = {name: [key for key, f in record.files.items() if f.match(name) is not None] for name in files}
    unknown = [name for name, keys in matched.items() if not keys and name != DONE_FILE]
    assert not unknown, f"{stage} wrote files its contract does not list: {unknown}"
    for key, template in record.files.items():
        instances = [name for name, keys in matched.items() if key in keys]
        if stage == "extract" and key.startswith("seed"):
            continue  # one extract file per paper that measured the run
        assert instances, f"{stage}: no file for {template.template}"
        for name in instances:
            content = _keys(folder / name)
            missing = [k for k in template.keys if k not in content]
            assert not missing, f"{stage}/{name} lacks {missing}"
            for prefix in template.prefixed:
                assert any(re.fullmatch(rf"{prefix}_\w+", k) for k in content), f"{stage}/{name}: no {prefix}_*"


def _keys(path) -> set[str]:
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as data:
            return set(data.files)
    if path.suffix == ".json":
        return set(load_json(path))
    return set(load_torch(path))
