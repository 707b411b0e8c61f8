"""Shared fixtures: the test stack (real Kafka, PostgreSQL and MariaDB) started once per session.

The stack uses its own home and ports (``tests/simpul.test.yaml``) so it never touches the one
``make run`` uses. Set ``SIMPUL_KEEP_TEST_STACK=1`` to leave it running between runs while
developing; ``make stop`` stops it.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from simpul.config import SimpulConfig, load_config, load_env_file

TEST_CONFIG = Path(__file__).with_name("simpul.test.yaml")


@pytest.fixture(scope="session")
def test_config() -> SimpulConfig:
    """The test suite's configuration (no servers needed)."""
    return load_config(TEST_CONFIG)


@pytest.fixture(scope="session")
def stack_config(test_config: SimpulConfig) -> Iterator[SimpulConfig]:
    """The test config with its stack up and the generated secrets in the environment."""
    from simpul.stack import LocalStack

    stack = LocalStack(test_config)
    stack.up()
    load_env_file(test_config.home / "stack.env")
    yield test_config
    if not os.environ.get("SIMPUL_KEEP_TEST_STACK"):
        stack.down()


@pytest.fixture
def unique_name() -> str:
    """A name no other test uses, for topics, databases, slots and consumer groups."""
    return f"t_{uuid.uuid4().hex[:10]}"
