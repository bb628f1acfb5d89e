"""Prove the PyTorch port computes Paddle's function: ``python check.py logit_check [--paddle X --torch DIR]``."""
from ernievil2torch.cli import logit_check, run_command

if __name__ == "__main__":
    run_command({"logit_check": logit_check}, name="check")
