"""The chaos script: real workers under kill -9, cut connections and skewed clocks (chaos.py)."""
