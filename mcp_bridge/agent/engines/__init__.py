"""Engines behind one interface (`base.Engine`): `claude-code` and `anthropic`."""
