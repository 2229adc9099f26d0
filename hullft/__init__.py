"""HullFT: a test-time finetuning benchmark harness."""
