"""Test-only hooks in product code act only where a test asked for them explicitly."""

from __future__ import annotations

import pytest

from export.runtime.chat_model import TEST_HOOKS_ENV, fail_on_seed_hook


def test_no_hook_configured_is_none_whatever_the_environment():
    assert fail_on_seed_hook({}, {}) is None
    assert fail_on_seed_hook({"test_fail_on_seed": ""}, {TEST_HOOKS_ENV: "1"}) is None


@pytest.mark.parametrize("environ", [{}, {TEST_HOOKS_ENV: "0"}, {TEST_HOOKS_ENV: "yes"}])
def test_fail_on_seed_refuses_to_load_without_the_test_switch(environ):
    with pytest.raises(ValueError, match="test-only hook") as refused:
        fail_on_seed_hook({"test_fail_on_seed": "7"}, environ)
    assert TEST_HOOKS_ENV in str(refused.value)


def test_fail_on_seed_acts_with_the_test_switch():
    assert fail_on_seed_hook({"test_fail_on_seed": "7"}, {TEST_HOOKS_ENV: "1"}) == 7
