"""Test data for the playbook engine: a third advisory (YAML only) and a pure agent stand-in."""
