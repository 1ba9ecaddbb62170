"""Agent runs: a local Claude Code (or the Messages API) started, streamed, steered and approved from outside.

See docs/AGENT_RUNS.md. Front ends (the terminal commands, later the extension and loopback doors) talk to
one run service per user through `client.AgentClient`; the service owns runs, engines, approvals and limits.
"""
