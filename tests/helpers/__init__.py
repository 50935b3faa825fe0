"""What the tests share besides fixtures: import it from here, never from a conftest
(conftest files hold the fixtures, and only those). Servers on ports of their own and the
runs' namespaces in the shared stores come from ``storage.embedded.processes`` and
``loadtest.namespaces``, which the benchmarks use too. (tests/__init__.py has pytest
rewrite the asserts in here.)"""
