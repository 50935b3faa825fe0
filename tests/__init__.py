import pytest

# The asserts of tests/helpers/ (is_problem, Api.register, follow, ...) explain their
# failures as a test's do: pytest rewrites them if told before they are imported.
pytest.register_assert_rewrite("tests.helpers")
