"""Real local servers for the tests: reuse one already listening, otherwise install and start it.

Under CI (`CI` set) a server that cannot be started fails the test run; on a developer
machine it skips the tests that need it. Every process started here is stopped at exit.
"""
