"""A Triton Inference Server model repository from a deploy bundle (`python -m project.export format=triton`):
the bundle's engine under Triton's own backend, a Python-backend preprocessing model that runs the project's
own preprocessing code, and an ensemble wiring encoded images → preprocessing → engine."""
