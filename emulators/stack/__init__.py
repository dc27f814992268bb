"""The local Azure that the tests, ``make bench`` and ``make run`` share, on loopback.

- ``environment``: what a process does before it talks to the stand-ins: trust the keyless
  Azurite's certificate, isolate its environment, build a child's environment. It imports
  nothing that imports aiohttp, so it can (and must) run first.
- ``services``: the stand-ins (identity endpoint, Azure OpenAI emulator, Azurite, the ``az``
  stand-in, a storage account that refuses everything, the OTLP receiver for traces), each a
  context manager, the settings a worker gets from them, and ``start_local_azure`` for all of
  them at once.
- ``workers``: a worker host process, a producer's view of its queue and results, and polls
  that give up at a deadline with the host's log.

This package imports none of them itself, so that importing ``environment`` stays light.
"""
