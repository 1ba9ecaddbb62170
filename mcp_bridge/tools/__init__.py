"""Tools the server exposes. Each module builds `Tool`s from its own dependencies; `base` is the contract."""
