"""eraflow's commands run OpenMP with sleeping waits when the machine is busy, unless the user chose.

Bug guarded against: spinning OpenMP threads (libgomp's default) made LightGBM 3-9× slower on a busy
2-core machine, while on a quiet one spinning was ~20 % faster (benches/journey.py); a user's own
OMP_WAIT_POLICY must always win.
"""

from __future__ import annotations

import os
import subprocess
import sys

from eraflow.engine import threads

PROBE = """
import os, sys
os.getloadavg = lambda: ({load}, 0.0, 0.0)
os.cpu_count = lambda: 2
sys.argv = ["eraflow", "--help"]
from eraflow.cli import main
try:
    main()
except SystemExit:
    pass
print("policy", os.environ.get("OMP_WAIT_POLICY"))
"""


def test_passive_only_when_other_work_fills_the_cores():
    assert threads.openmp_wait_policy(load=2.0, cores=2) == "passive"
    assert threads.openmp_wait_policy(load=7.3, cores=2) == "passive"
    assert threads.openmp_wait_policy(load=1.9, cores=2) is None
    assert threads.openmp_wait_policy(load=3.0, cores=16) is None


def test_the_users_policy_wins(monkeypatch):
    monkeypatch.setattr(os, "getloadavg", lambda: (9.0, 9.0, 9.0))
    monkeypatch.setenv("OMP_WAIT_POLICY", "active")
    threads.choose_openmp_waits()
    assert os.environ["OMP_WAIT_POLICY"] == "active"
    monkeypatch.delenv("OMP_WAIT_POLICY")
    threads.choose_openmp_waits()
    assert os.environ["OMP_WAIT_POLICY"] == "passive"


def run_probe(load: float, **env) -> str:
    base = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", PROBE.format(load=load)], env={**base, **env}, capture_output=True,
                         text=True, check=True)
    return out.stdout.strip().splitlines()[-1]


def test_cli_chooses_before_any_command():
    assert run_probe(5.0) == "policy passive"
    assert run_probe(0.5) == "policy None"
    assert run_probe(5.0, OMP_WAIT_POLICY="ACTIVE") == "policy ACTIVE"
