"""The package's public surface: short, lazy, and every name real."""

import subprocess
import sys

import ml_agent


def test_every_exported_name_resolves():
    assert set(ml_agent.__all__) == {"__version__", *ml_agent._EXPORTS}
    for name in ml_agent.__all__:
        assert getattr(ml_agent, name) is not None, name


def test_the_documented_example_works():
    config = ml_agent.load_config("configs/a10.yaml", overrides=["sandbox.gpu=H100"])
    plan = ml_agent.build_plan(config, "configs/a10.yaml")
    assert isinstance(plan, ml_agent.Plan)
    assert plan.sandbox.gpu == "H100"


def test_importing_the_package_loads_no_pydantic():
    code = "import sys, ml_agent; print('pydantic' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
