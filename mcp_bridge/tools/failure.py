"""`ToolFailure`, on its own so that modules on the start-up path (path policy) need not load pydantic."""


class ToolFailure(Exception):
    """The tool ran and could not do what was asked; the message is shown to the agent as is.

    Say what failed, why, and what to do instead.
    """
