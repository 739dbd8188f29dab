"""What the tests (tests/ and drivers/*/tests) and the benchmarks share, never shipped in the
package: a store server and a reader of what reached it, a fault-injecting proxy, waiting for a
condition, a driver running for a block, and real encoded line protocol to feed the buffer.
The pytest fixtures built on them are in the root conftest.py."""
