"""The end-to-end tests serve each web part as `regie run` does (``services.run.SERVED``):
what they measure and find is what an operator runs."""

from pathlib import Path

import pytest
from gunicorn.config import Config as GunicornConfig

from services.run import APPS, SERVED
from tests.conftest import make_settings
from tests.e2e.portal_system import PortalSystem
from tests.e2e.system import System

PORTS = {f"{part}_PORT": "8000"
         for part in ("BILLING", "PAYMENT", "PAYFIP_SIM", "PORTAL", "BACKOFFICE")}


@pytest.mark.parametrize("system", [System, PortalSystem])
@pytest.mark.parametrize("name", sorted(SERVED))
def test_the_e2e_system_serves_each_web_part_as_regie_run_does(
        tmp_path: Path, system: type[System], name: str) -> None:
    argv = system(make_settings("sqlite", tmp_path), dict(PORTS), tmp_path).argv(name)
    assert argv[1:3] == ["-m", "gunicorn"], argv
    args = GunicornConfig().parser().parse_args(argv[3:])
    assert (args.workers, args.threads) == (SERVED[name].workers, SERVED[name].threads), argv
    assert (args.bind, args.args) == (["127.0.0.1:8000"], [APPS[name]]), argv
