"""Code the test modules share (test modules never import each other): the CLI and workflow runners,
the local AWS stand-ins, and the process checks of the resume tests. Fixtures live in tests/conftest.py."""
