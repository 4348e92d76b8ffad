"""Shared builders, sinks and comparisons of the Beam pipeline tests.

Everything here runs in the test process: the DirectRunner, the
BundleBasedDirectRunner and the FnApiRunner execute in-process, so a sink or a
collector may hand results back through a module-level registry or a file.
"""
