"""Fixtures of the Responses API and service-tier tests (named apart from the modules' own ``emulator``/``client``
and the session's ``issuer``)."""

from tests.emulators.responses_fixtures import emu, emu_issuer, sdk

__all__ = ["emu", "emu_issuer", "sdk"]
