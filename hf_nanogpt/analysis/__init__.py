"""Looking inside a model: attention maps (`attention`) and parameter statistics and memory (`params`).

Entry point: `scripts/analyze.py attention|params|sizes`.
"""
