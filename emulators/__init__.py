"""Local stand-ins for the Azure services the worker uses, bound to 127.0.0.1 only.

Never deployed (see .funcignore). Every stand-in is driven by the real SDKs in tests.
"""
