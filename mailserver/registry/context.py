"""What registry operations need: the store, the ID-number keys and the password hasher."""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from ..config import Config
from ..identity.keys import IdKeyring
from ..identity.logincache import LoginCache
from ..identity.passwords import Passwords
from ..store import Store


@dataclass
class Registry:
    config: Config
    store: Store

    @cached_property
    def keyring(self) -> IdKeyring:
        return IdKeyring.load(self.config.data_path(self.config.keys.dir))

    @cached_property
    def passwords(self) -> Passwords:
        login = self.config.login
        return Passwords(self.config.passwords, LoginCache(login.cache_size, login.cache_ttl_seconds))

    @property
    def domain(self) -> str:
        return self.config.local_domains[0]
