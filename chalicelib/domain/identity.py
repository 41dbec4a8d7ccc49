"""Who is calling: a user, or an operator who may see every user's instances."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Caller:
    user_id: str
    is_admin: bool = False

    def may_see(self, owner_id: str) -> bool:
        return self.is_admin or owner_id == self.user_id
