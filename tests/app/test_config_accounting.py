"""cpu_accounting: true, false or "on-demand" (the default), from the file and the environment."""
import pytest

from fiberapp.config import ConfigError, load


def test_cpu_accounting_defaults_to_on_demand():
    assert load(None, env={}).cpu_accounting == "on-demand"


@pytest.mark.parametrize("text, value", [("true", True), ("false", False), ('"on-demand"', "on-demand")])
def test_cpu_accounting_from_the_file(tmp_path, text, value):
    path = tmp_path / "fiberapp.toml"
    path.write_text(f"cpu_accounting = {text}\n")
    assert load(str(path), env={}).cpu_accounting == value


@pytest.mark.parametrize("text, value", [("1", True), ("off", False), ("on-demand", "on-demand")])
def test_cpu_accounting_from_the_environment(text, value):
    assert load(None, env={"FIBERAPP_CPU_ACCOUNTING": text}).cpu_accounting == value


def test_cpu_accounting_refuses_anything_else(tmp_path):
    path = tmp_path / "fiberapp.toml"
    path.write_text('cpu_accounting = "sometimes"\n')
    with pytest.raises(ConfigError, match="on-demand"):
        load(str(path), env={})
