"""Every console command in the README and in docs/*.md runs, as a new user types it, with the result
the page shows. The harness reads each page's fenced blocks: a line `$ CMD  # comment` is a command,
the lines after it (up to the next command) are what it prints. The README runs top to bottom in
one folder holding a copy of examples/, on one store (what a newcomer following it sees: a sweep
after the first run finds that run's twin); each docs/ page's block runs in a fresh such folder.
Commands run one after another (so `<id>` can name the run a command before it made), with the
project venv's `python` and `runner` first on PATH.

- exit code: 0, or 2 where the comment says "exit code 2";
- a shown output line must appear in the output; `...` in it matches anything, every other
  character (the numbers included) must be exactly as shown;
- placeholders: `<id>` the newest run of ./mlflow.db, `<parent run id>` its newest sweep parent,
  `~/mnist` a folder of small MNIST-format IDX files made here.
Blocks that install packages (`pip install`) are run by tests/e2e/test_install.py in a throwaway
venv, and the block of a user's own inference method by tests/e2e/test_add_method.py in its fixture
folder; NOT_HERE names the test that runs each of their commands, and the harness checks it exists.
"""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT

README = ROOT / "README.md"
#: the README and the reference pages it links to: every command in any of them is run
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]

#: commands run elsewhere (they change the environment, or need a folder of their own): prefix -> "file::test"
NOT_HERE = {
    "pip install .": "tests/e2e/test_install.py::test_installed_runner_fits_from_an_empty_folder",
    'cd "$(mktemp -d)" && runner model=coin': "tests/e2e/test_install.py::test_installed_runner_fits_from_an_empty_folder",
    "pip install examples/runner_plugin_example": "tests/e2e/test_install.py::test_plugin_package_model_fits_its_conjugate_posterior",
    "mkdir -p scratch && echo '{\"y\"": "tests/e2e/test_install.py::test_readme_plugin_commands",
    "runner model=normal_mean": "tests/e2e/test_install.py::test_readme_plugin_commands",
    # a Ray cluster of two nodes on loopback, started and ended by the test
    "ray start --head": "tests/e2e/test_ray_cluster.py::test_a_sweep_on_a_two_node_cluster_lands_in_the_drivers_store",
    "python -m runner -m hydra/launcher=ray hydra.launcher.ray.init.address":
        "tests/e2e/test_ray_cluster.py::test_a_sweep_on_a_two_node_cluster_lands_in_the_drivers_store",
    # a one-node SLURM on localhost, started and ended by the test
    "python -m runner -m hydra/launcher=slurm model=coin":
        "tests/e2e/test_slurm.py::test_an_eight_seed_sweep_through_slurm_equals_the_basic_launcher",
    "python -m runner -m hydra/launcher=slurm hydra.launcher.timeout_min=1":
        "tests/e2e/test_slurm.py::test_a_job_past_its_time_limit_is_one_finished_run_with_an_uninterrupted_fits_numbers",
    # needs the method's own folder (tests/fixtures/my_method): run there, as the README shows it
    "python -m runner --config-dir conf model=coin inference=importance":
        "tests/e2e/test_add_method.py::test_a_method_from_the_users_folder_is_a_full_run",
}


def blocks() -> list[tuple[str, list[dict]]]:
    """("page:line number of the block", [{cmd, comment, shown: [lines]}]) for each fenced block with
    commands, page by page (README.md first)."""
    return [block for page in PAGES for block in page_blocks(page)]


def page_blocks(page: Path) -> list[tuple[str, list[dict]]]:
    out, inside, current = [], False, None
    name = page.relative_to(ROOT).as_posix()
    for n, line in enumerate(page.read_text().splitlines(), start=1):
        if line.startswith("```"):
            if inside and current and current[1]:
                out.append(current)
            inside, current = not inside, (f"{name}:{n}", [])
            continue
        if not inside:
            continue
        if line.startswith("$ "):
            cmd, _, comment = line[2:].partition("  #")
            current[1].append({"cmd": cmd.strip(), "comment": comment.strip(), "shown": []})
        elif current[1] and line.strip():
            current[1][-1]["shown"].append(line.strip())
    return out


def elsewhere(cmd: str) -> str | None:
    return next((test for prefix, test in NOT_HERE.items() if cmd.startswith(prefix)), None)


BLOCKS = blocks()
HERE = [b for b in BLOCKS if not any(elsewhere(c["cmd"]) for c in b[1])]
THERE = [b for b in BLOCKS if any(elsewhere(c["cmd"]) for c in b[1])]
#: the README's blocks run as a newcomer runs them: in order, in one folder, on one store
README_HERE = [b for b in HERE if b[0].startswith("README.md:")]
DOCS_HERE = [b for b in HERE if not b[0].startswith("README.md:")]


def test_the_readme_has_commands_and_each_is_run_somewhere():
    assert len(HERE) >= 4 and sum(len(c) for _, c in HERE) >= 25
    # every `$ ` line of every page is a parsed command (none outside a fenced block)
    assert sum(len(c) for _, c in BLOCKS) == sum(
        1 for page in PAGES for ln in page.read_text().splitlines() if ln.startswith("$ "))
    assert {b.split(":")[0] for b, _ in BLOCKS} >= {"README.md", "docs/methods.md", "docs/diagnostics.md"}
    # every page is linked from the README (a newcomer finds it)
    readme = README.read_text()
    assert all(f"]({page.relative_to(ROOT).as_posix()})" in readme for page in PAGES[1:])
    for _, cmds in THERE:
        for c in cmds:
            test = elsewhere(c["cmd"])
            assert test, f"README command in a pip-install block is run by no test: {c['cmd']}"
            path, name = test.split("::")
            assert f"def {name}(" in (ROOT / path).read_text(), test


def pattern(shown: str) -> re.Pattern:
    return re.compile(".*".join(re.escape(part) for part in shown.split("...")))


def write_mnist(folder: Path) -> None:
    """300 MNIST-format images (28x28 uint8, IDX gzip): two kinds of blobs, so K components find structure."""
    import gzip
    import struct

    rng = np.random.default_rng(0)
    images = np.zeros((300, 28, 28), np.uint8)
    images[::2, 4:14, 4:14] = 255
    images[1::2, 14:24, 14:24] = 255
    images = np.where(rng.random(images.shape) < 0.05, 255 - images, images).astype(np.uint8)
    folder.mkdir(parents=True, exist_ok=True)
    header = struct.pack(">BBBB", 0, 0, 0x08, 3) + struct.pack(">III", *images.shape)
    (folder / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(header + images.tobytes()))


def newest(store: Path, parent: bool) -> str:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{store}")
    exps = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(exps, order_by=["attributes.start_time DESC"])
    for r in runs:
        if not parent or "sweep_hash" in r.data.tags:
            return r.info.run_id
    raise AssertionError(f"no {'sweep parent' if parent else 'run'} in {store} for the placeholder")


def test_the_readme_in_order_on_one_store(tmp_path):
    """Every README command, top to bottom, in one folder: each sees the store and the files the
    ones before it left, as a newcomer following the page does."""
    folder = fresh_folder(tmp_path)
    for name, cmds in README_HERE:
        run_block(name, cmds, folder)


@pytest.mark.parametrize("block", DOCS_HERE, ids=[n for n, _ in DOCS_HERE])
def test_docs_block(block, tmp_path):
    name, cmds = block
    run_block(name, cmds, fresh_folder(tmp_path))


def fresh_folder(tmp_path: Path) -> Path:
    """A folder holding a copy of examples/, as a clone has it."""
    shutil.copytree(ROOT / "examples", tmp_path / "examples",
                    ignore=shutil.ignore_patterns("__pycache__", "mlruns", "outputs", "*.db"))
    return tmp_path


def run_block(name: str, cmds: list, tmp_path: Path) -> None:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("HYDRA_FULL_ERROR", None)
    for c in cmds:
        cmd = c["cmd"]
        if "~/mnist" in cmd:
            write_mnist(tmp_path / "mnist")
            cmd = cmd.replace("~/mnist", str(tmp_path / "mnist"))
        here = tmp_path / (re.match(r"cd (\S+) &&", cmd) or [None, "."])[1]  # the store of the folder it runs in
        if "<parent run id>" in cmd:
            cmd = cmd.replace("<parent run id>", newest(here / "mlflow.db", parent=True))
        if "<id>" in cmd:
            cmd = cmd.replace("<id>", newest(here / "mlflow.db", parent=False))
        proc = subprocess.run(["bash", "-c", cmd], cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=600, stdin=subprocess.DEVNULL)
        output = proc.stdout + proc.stderr
        expected = 2 if "exit code 2" in c["comment"] else 0
        assert proc.returncode == expected, f"{name}: $ {cmd}\n-> exit {proc.returncode}\n{output[-3000:]}"
        lines = output.splitlines()
        for shown in c["shown"]:
            pat = pattern(shown)
            assert any(pat.fullmatch(line.strip()) for line in lines), \
                f"{name}: $ {cmd}\nshould print: {shown}\nprinted:\n{output[-3000:]}"
