"""Example workloads users can copy: each is one module, run with
``--workload examples.MODULE:Class`` from the repository root."""
