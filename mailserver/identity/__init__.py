"""Identity: resident ID numbers, the keys that protect them, passwords and activation codes."""
