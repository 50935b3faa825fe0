"""tests/realtime/test_contract.py, every test, against the embedded stores."""
from tests.realtime.test_contract import *  # noqa: F401,F403 - the same tests, this directory's fixtures
