"""Fixtures every test folder shares. This file's folder is on ``sys.path`` (pytest puts a root
conftest's folder there), so the test modules import their helpers as ``helpers.*``."""
