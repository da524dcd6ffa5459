"""Inventory: which Windows hosts kbfix talks to, how to reach them, their groups, roles and vars.

Reads kbfix YAML and Ansible INI/YAML inventories (with group_vars/host_vars), merges variables
with Ansible's precedence, turns WinRM hosts into `remoting.endpoint.Endpoint`s with their
credentials wrapped in `Secret`, and selects hosts with Ansible `--limit` patterns. Every bad
input raises `InventoryError` (file, line, field, message).
"""

from __future__ import annotations

from inventory.errors import InventoryError
from inventory.loader import load_inventory
from inventory.model import Group, Host, Inventory

__all__ = ["Group", "Host", "Inventory", "InventoryError", "load_inventory"]
