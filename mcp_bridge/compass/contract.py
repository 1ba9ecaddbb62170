"""The body of Compass's registration answer, as pydantic models (see `client.parse_registration`).

Imported only when a registration is parsed, so pydantic stays off the server's start-up path.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class _User(BaseModel):
    id: str | int
    name: str
    role: str


class _Tool(BaseModel):
    name: str
    description: str = ""
    scope: str
    input_schema: dict[str, Any] | None = Field(default=None, alias="inputSchema")


class _Context(BaseModel):
    memories: list[Any] = Field(default_factory=list)
    dashboards: list[Any] = Field(default_factory=list)
    installed_skills: list[Any] = Field(default_factory=list, alias="installedSkills")


class RegistrationBody(BaseModel):
    user: _User
    scopes: list[str]
    tools: list[_Tool] = Field(default_factory=list)
    context: _Context = Field(default_factory=_Context)
