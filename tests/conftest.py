"""Shared test set-up: one thread per test process (the CI machine has 2 cores), deterministic torch, and the fixtures
more than one test file uses or that must start before the first test."""
import os
import subprocess
import sys
import time
from types import SimpleNamespace

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def cxr_oracle(tmp_path_factory):
    """The toy-CXR oracle classifier (eval_image.train_oracle) at the small budget, trained once for every test file
    that reads images with it: .oracle, .run_dir (its cache; copy it before writing there), .budget (the train_oracle
    arguments) and .cpu_seconds (what training took)."""
    import eval_image as E
    from data.synthetic import CXR_FINDINGS, SyntheticDataset
    budget = dict(steps=300, n_images=2000, n_heldout=300, seed=0)  # ~7 s of CPU at 1 thread
    run_dir = str(tmp_path_factory.mktemp("oracle_run"))
    t0 = time.process_time()
    oracle = E.train_oracle(SyntheticDataset("cxr", "train", image_size=64), CXR_FINDINGS, run_dir=run_dir, **budget)
    return SimpleNamespace(oracle=oracle, run_dir=run_dir, budget=budget, cpu_seconds=time.process_time() - t0)


class BackgroundRun:
    """`python ARGS --out DIR` started now, output to files; wait() returns DIR once it exited 0, else fails with
    the tail of what it printed."""

    def __init__(self, args, out):
        self.args, self.out = args, out
        os.makedirs(out)
        self.log = open(os.path.join(os.path.dirname(out), os.path.basename(out) + ".output"), "w+")
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ROOT}
        self.proc = subprocess.Popen([sys.executable, *args, "--out", out], cwd=ROOT, env=env, stdout=self.log,
                                     stderr=subprocess.STDOUT)

    def wait(self) -> str:
        code = self.proc.wait()
        self.log.seek(0)
        if code != 0:
            raise AssertionError(f"{self.args} failed ({code}):\n{self.log.read()[-4000:]}")
        return self.out

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


SMOKE_TEST = ("test_train.py", "test_smoke_preset_beats_the_trivial_baselines_both_ways")


@pytest.fixture(scope="session", autouse=True)
def smoke_preset_run(request, tmp_path_factory):
    """`python train.py --preset smoke` on a fixed seed, the suite's longest run (minutes), for test_train.py's
    smoke-preset test. It starts before the first test whenever that test is selected: pytest runs the tests on one
    core, so the run trains on the CI machine's other core meanwhile, and the test only waits for what is left. None
    when the test is not selected."""
    selected = {(item.path.name, getattr(item, "originalname", "")) for item in request.session.items}
    if SMOKE_TEST not in selected:
        yield None
        return
    run = BackgroundRun(["train.py", "--preset", "smoke", "--seed", "0", "--threads", "1", "--no-eval-joint"],
                        str(tmp_path_factory.mktemp("smoke") / "run"))  # joint pairs: tested on the tiny run
    yield run
    run.stop()
