"""Every stage, run on a tiny run, writes exactly what its record in pipeline.contract promises: each file is an
instance of one of the stage's templates, every template has at least one instance, and each file holds the
record's keys (the arrays of an .npz, the keys of a .json object) and at least one key per prefix of per-layer or
per-k keys."""
import re
from pathlib import Path

import numpy as np
import pytest
from stage_commands import STAGES, ensure

from pipeline import contract
from utils.io import load_json, load_torch
from utils.rundir import DONE_FILE, TRAIN_FILES

COMMANDS = {command.stage: name for name, command in STAGES.items() if command.stage}


def test_every_contract_stage_has_a_tiny_command():
    assert set(COMMANDS) == set(contract.STAGES)


@pytest.mark.parametrize("stage", sorted(contract.STAGES))
def test_stage_writes_what_its_contract_promises(stage_workdir, stage):
    command = STAGES[COMMANDS[stage]]
    ensure(stage_workdir, COMMANDS[stage])
    record = contract.stage(stage)
    folder = command.folder(stage_workdir)
    subfolders = {Path(f.template).parent for f in record.files.values()} | {Path(".")}   # train: checkpoints/
    files = sorted(str(p.relative_to(folder)) for sub in subfolders for p in (folder / sub).iterdir()
                   if p.is_file() and not p.name.startswith("."))
    assert DONE_FILE in files
    matched = {name: [key for key, f in record.files.items() if f.match(name) is not None] for name in files}
    unknown = [name for name, keys in matched.items() if not keys and name != DONE_FILE]
    assert not unknown, f"{stage} wrote files its contract does not list: {unknown}"
    for key, template in record.files.items():
        instances = [name for name, keys in matched.items() if key in keys]
        if stage == "extract" and key.startswith("seed") or template.optional:
            continue  # one extract file per paper that measured the run; a file some runs only write
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
    if path.suffix == ".csv":
        return set(path.read_text().splitlines()[0].split(","))
    return set(load_torch(path))


def _spelled(value: str) -> list[str]:
    """The stage names a string constant spells: a fixed file name as the whole constant or its last path part, a
    folder with '/' anywhere in it, or the head
    of a templated name (the literal part before '{', e.g. "projections_" of an f-string) as the whole constant or
    followed by the template's extension."""
    found = []
    for record in contract.STAGES.values():
        if "/" in record.folder and record.folder in value:
            found.append(record.folder)
        for stage_file in record.files.values():
            head, braced, _ = stage_file.template.partition("{")
            if not braced and (value == stage_file.template or value.endswith("/" + stage_file.template)):
                found.append(stage_file.template)
            elif braced and (value == head or value.startswith(head) and value.endswith(f".{stage_file.kind}")):
                found.append(stage_file.template)
    return found


def test_stage_file_names_are_spelled_only_in_the_contract():
    """No module but pipeline/contract.py holds a stage file or folder name in a string (docstrings aside)."""
    import ast

    from conftest import ROOT

    found = []
    for path in sorted(ROOT.rglob("*.py")):
        relative = path.relative_to(ROOT)
        if relative.parts[0] in (".git", "runs", "data") or relative == Path("pipeline/contract.py"):
            continue
        allowed = set(TRAIN_FILES.values()) if relative == Path("utils/rundir.py") else set()  # the ground floor's
        tree = ast.parse(path.read_text())
        docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                      if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef))
                      and node.body and isinstance(node.body[0], ast.Expr)
                      and isinstance(node.body[0].value, ast.Constant)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
                found += [(str(relative), node.lineno, name) for name in _spelled(node.value) if name not in allowed]
    assert not found, found
