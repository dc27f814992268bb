"""The emulator fixture chain of this directory (emulator_fixtures.py: the session's ``issuer`` -> ``start_emulator``
-> ``Emulator``) and the Responses API and service-tier tests' ``emu`` and ``sdk`` (responses_fixtures.py)."""

from tests.emulators.emulator_fixtures import start_emulator
from tests.emulators.responses_fixtures import emu, sdk

__all__ = ["emu", "sdk", "start_emulator"]
