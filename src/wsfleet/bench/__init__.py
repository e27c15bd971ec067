"""wsfleet's benchmark suite (`python -m wsfleet.bench`, `make bench`).

Every figure is measured beside baselines in the same run: a plain picows
broadcast server (`reference_server`) and the gateway with its features off.
"""
